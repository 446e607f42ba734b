//! `kensa synth`: write a generated dataset in MVTec layout.
//!
//! Layout: `train/good/NNN.png`, `test/good/NNN.png`, `test/debris/NNN.png` and
//! `ground_truth/debris/NNN_mask.png`. Seeds are derived from one base seed and the
//! image's role and index, so adding images never changes the ones already written.

use std::path::Path;

use anyhow::{Context, Result};
use kensa_shared::synth::{self, SynthSpec};

use crate::cli::SynthArgs;
use crate::settings;

/// Write the dataset the flags describe.
pub fn run(a: &SynthArgs) -> Result<()> {
    let spec = SynthSpec::square(a.surface.into(), settings::synth_size(a.size)?);
    let counts = Counts { train: a.train, test_good: a.test_good, test_defect: a.test_defect };
    let n = write_dataset(&a.out, &spec, counts, a.seed)?;
    say!("wrote {n} files to {}", a.out.display());
    Ok(())
}

/// How many images of each kind to write.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Good images for training.
    pub train: usize,
    /// Good images for testing.
    pub test_good: usize,
    /// Defective images for testing, with masks.
    pub test_defect: usize,
}

/// Role of an image, mixed into its seed.
#[derive(Debug, Clone, Copy)]
enum Role {
    Train = 1,
    TestGood = 2,
    TestDefect = 3,
}

/// The seed of image `index` with `role`, so each image is reproducible on its own.
fn image_seed(base: u64, role: Role, index: usize) -> u64 {
    base.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((role as u64) << 48) ^ index as u64
}

/// Write the dataset under `out`; returns the number of files written.
pub fn write_dataset(out: &Path, spec: &SynthSpec, counts: Counts, seed: u64) -> Result<usize> {
    let jobs = [
        (Role::Train, "train/good", counts.train, false),
        (Role::TestGood, "test/good", counts.test_good, false),
        (Role::TestDefect, "test/debris", counts.test_defect, true),
    ];
    let mut written = 0;
    for (role, dir, n, defective) in jobs {
        let dir = out.join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mask_dir = out.join("ground_truth/debris");
        if defective {
            std::fs::create_dir_all(&mask_dir).with_context(|| format!("creating {}", mask_dir.display()))?;
        }
        for i in 0..n {
            let sample = synth::generate(spec, image_seed(seed, role, i), defective);
            let path = dir.join(format!("{i:03}.png"));
            sample.image.save(&path).with_context(|| format!("writing {}", path.display()))?;
            written += 1;
            if defective {
                let path = mask_dir.join(format!("{i:03}_mask.png"));
                sample.mask.save(&path).with_context(|| format!("writing {}", path.display()))?;
                written += 1;
            }
        }
    }
    Ok(written)
}
