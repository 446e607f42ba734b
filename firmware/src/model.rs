//! The model on the box: a verified package run by tract.
//!
//! Loading and running live in `kensa_shared::runtime`, the same code `kensa export`
//! uses to check a package's accuracy, so the box scores exactly what the PC measured.

use image::DynamicImage;
use kensa_shared::package::{Manifest, PackageError, VerifyingKey};
use kensa_shared::runtime::{Runner, RuntimeError};

use crate::station::Inspector;

/// Why a package could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read model package {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid package.
    #[error("model package {path}: {source}")]
    Package {
        /// The file.
        path: String,
        /// Why.
        source: PackageError,
    },
    /// tract refused the graph.
    #[error("model package {path}: {source}")]
    Graph {
        /// The file.
        path: String,
        /// tract's message.
        source: RuntimeError,
    },
}

/// Threads a package runs on: every core for a tiled package, whose tiles of one frame
/// are scored side by side; one for an untiled one, one part at a time on the line.
fn workers(manifest: &Manifest) -> usize {
    match manifest.tiling {
        Some(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        None => 1,
    }
}

/// Timed runs of the self-test: its latency is the slowest of them (the p99 of so few).
pub const LATENCY_RUNS: usize = 3;

/// A package ready to score frames.
#[derive(Debug, Clone)]
pub struct Model {
    runner: Runner,
    /// Hex public key of the package's signer, when signed.
    signer: Option<String>,
    /// Preprocessing + inference per part, as the self-test measured it on this box (µs).
    latency_p99_us: Option<u64>,
}

impl Model {
    /// Load and verify a package file; with `trusted` keys, only a package signed by
    /// one of them is accepted.
    pub fn load(path: &std::path::Path, trusted: &[VerifyingKey]) -> Result<Self, ModelError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: name.clone(), source })?;
        Self::from_bytes(&bytes, &name, trusted)
    }

    /// Verify and load package bytes (`name` only names them in errors).
    pub fn from_bytes(bytes: &[u8], name: &str, trusted: &[VerifyingKey]) -> Result<Self, ModelError> {
        let pkg = kensa_shared::package::Package::from_bytes(bytes)
            .and_then(|p| p.check_trust(trusted).map(|()| p))
            .map_err(|source| ModelError::Package { path: name.into(), source })?;
        let runner = Runner::new(&pkg, workers(&pkg.manifest))
            .map_err(|source| ModelError::Graph { path: name.into(), source })?;
        let signer = pkg.signature.map(|s| kensa_shared::package::key_hex(&s.public_key));
        Ok(Self { runner, signer, latency_p99_us: None })
    }

    /// The package manifest.
    pub fn manifest(&self) -> &Manifest {
        self.runner.manifest()
    }

    /// Hex public key of the package's signer, when it is signed.
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }

    /// Head and input size, e.g. `patchcore 256x256`; for an int8 package also where its
    /// integer products run on this CPU (the technician sees why it is as fast as it is).
    pub fn describe(&self) -> String {
        let m = self.manifest();
        let mut s = format!("{} {}x{}", m.kind, m.preprocess.width, m.preprocess.height);
        if m.precision == kensa_shared::package::Precision::Int8 {
            s += &format!(", int8 on {}", self.runner.integer_products().describe());
        }
        if let Some(t) = m.tiling {
            s += &format!(", tiles of {} px on {} thread(s)", t.tile, self.runner.tile_workers());
        }
        s
    }

    /// Replay the package's golden pairs (the scores its export recorded must come out
    /// again), then score `samples` (frames this box's camera took, at their full size),
    /// timing at least [`LATENCY_RUNS`] runs. A package that loads but computes
    /// something else, or cannot score this camera's frames, or scores NaN, fails here
    /// instead of on the line. The slowest timed run is the model's latency on this box
    /// (µs), which the belt delay must leave room for.
    pub fn self_test(&mut self, samples: &[DynamicImage]) -> Result<u64, String> {
        let replay =
            |r: &Runner| kensa_shared::runtime::replay_golden(r).map_err(|e| format!("self-test: {e}"));
        // The first run warms tract up: not timed.
        let mut timed: Vec<u64> = replay(&self.runner)?.into_iter().skip(1).collect();
        for (i, frame) in samples.iter().enumerate() {
            let started = std::time::Instant::now();
            match self.runner.score(frame).map(|o| o.score) {
                Ok(s) if s.is_finite() => timed.push(started.elapsed().as_micros() as u64),
                Ok(s) => return Err(format!("self-test on camera sample {} scored {s}", i + 1)),
                Err(e) => return Err(format!("self-test on camera sample {} failed: {e}", i + 1)),
            }
        }
        while timed.len() < LATENCY_RUNS {
            timed.extend(replay(&self.runner)?);
        }
        let slowest = timed.into_iter().max().unwrap_or(0);
        self.latency_p99_us = Some(slowest);
        Ok(slowest)
    }

    /// The latency the last self-test measured (µs).
    pub fn latency_p99_us(&self) -> Option<u64> {
        self.latency_p99_us
    }
}

/// The model in use, replaced between two parts when a new one arrives (a flashed
/// package, verified and self-tested before it is sent). A box whose store held nothing
/// loadable runs with none, line stopped, until one is flashed.
#[derive(Debug)]
pub struct Swappable {
    /// The model, or why there is none.
    current: Result<Model, String>,
    incoming: std::sync::mpsc::Receiver<Model>,
}

impl Swappable {
    /// Run `current` (or nothing, for the reason given) until `incoming` delivers another.
    pub fn new(current: Result<Model, String>, incoming: std::sync::mpsc::Receiver<Model>) -> Self {
        Self { current, incoming }
    }
}

impl Inspector for Swappable {
    fn score(&mut self, image: &DynamicImage) -> Result<f32, String> {
        self.refresh();
        match &mut self.current {
            Ok(m) => m.score(image),
            Err(why) => Err(format!("no model loaded: {why}")),
        }
    }

    fn threshold(&self) -> f32 {
        self.current.as_ref().map_or(f32::NAN, Inspector::threshold)
    }

    fn refresh(&mut self) {
        while let Ok(m) = self.incoming.try_recv() {
            tracing::warn!("now inspecting with {}", m.describe());
            self.current = Ok(m);
        }
    }

    fn missing(&self) -> Option<String> {
        self.current.as_ref().err().cloned()
    }

    fn latency_p99_us(&self) -> Option<u64> {
        self.current.as_ref().ok().and_then(Model::latency_p99_us)
    }
}

impl Inspector for Model {
    fn score(&mut self, image: &DynamicImage) -> Result<f32, String> {
        self.runner.score(image).map(|o| o.score).map_err(|e| e.to_string())
    }

    fn threshold(&self) -> f32 {
        self.runner.manifest().threshold
    }

    fn latency_p99_us(&self) -> Option<u64> {
        self.latency_p99_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_package_is_refused_by_name() {
        let err = Model::from_bytes(b"KENSAPKG\x03\x00\xff\xff\xff\xff", "line3.kpkg", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line3.kpkg") && msg.contains("truncated"), "{msg}");
        let err = Model::load(std::path::Path::new("/nonexistent/m.kpkg"), &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/m.kpkg"), "{err}");
    }

    /// Runs on every architecture the box is built for (aarch64 under qemu in CI): the
    /// int8 path goes through tract's integer kernels for that CPU.
    #[test]
    fn the_int8_demo_package_scores_the_line_like_the_fp32_one() {
        use kensa_shared::synth::{Surface, SynthSpec};
        let demo = include_bytes!("../../models/demo_brushed_metal.kpkg");
        let demo8 = include_bytes!("../../models/demo_brushed_metal.int8.kpkg");
        let mut fp32 = Model::from_bytes(demo, "fp32 demo", &[]).unwrap();
        let mut int8 = Model::from_bytes(demo8, "int8 demo", &[]).unwrap();
        assert_eq!(int8.manifest().precision, kensa_shared::package::Precision::Int8);
        let threshold = fp32.threshold();
        // One good part and one with debris: under qemu each inference takes minutes.
        let spec = SynthSpec::square(Surface::BrushedMetal, 256);
        for (seed, debris) in [(11, false), (12, true)] {
            let part = DynamicImage::ImageLuma8(kensa_shared::synth::generate(&spec, seed, debris).image);
            let (a, b) = (fp32.score(&part).unwrap(), int8.score(&part).unwrap());
            assert!((a - b).abs() <= 0.05 * a.abs(), "debris {debris}: int8 {b} vs fp32 {a}");
            assert_eq!(a >= threshold, debris, "the fp32 demo judges this part right ({a})");
            assert_eq!(b >= threshold, debris, "debris {debris}: int8 verdict differs ({b} vs fp32 {a})");
        }
    }

    /// On an x86-64 CPU without integer dot products the box runs an int8 package's
    /// integer products as f32 (`IntegerProducts`); both ways must give the graph's
    /// numbers on every architecture CI runs (natively, an emulated AVX2-only x86-64,
    /// aarch64 under qemu). One part with debris, so the map has a real peak.
    #[test]
    fn int8_integer_products_give_the_same_numbers_on_integer_and_f32_kernels() {
        use kensa_shared::package::Package;
        use kensa_shared::runtime::IntegerProducts;
        use kensa_shared::synth::{Surface, SynthSpec};
        let pkg = Package::from_bytes(include_bytes!("../../models/demo_brushed_metal.int8.kpkg")).unwrap();
        let spec = SynthSpec::square(Surface::BrushedMetal, 256);
        let part = DynamicImage::ImageLuma8(kensa_shared::synth::generate(&spec, 12, true).image);
        let run = |products| {
            let runner = Runner::with_products(&pkg, 1, products).unwrap();
            assert_eq!(runner.integer_products(), products, "the int8 demo graph is lowered as asked");
            runner.score(&part).unwrap()
        };
        let (int, float) = (run(IntegerProducts::Integer), run(IntegerProducts::Float));
        let peak = int.map.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak > 0.0 && int.map.len() == float.map.len());
        let worst = int.map.iter().zip(&float.map).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * peak, "maps differ by {worst} ({} of the peak {peak})", worst / peak);
        assert!((int.score - float.score).abs() <= 1e-4 * peak, "scores {} vs {}", int.score, float.score);
    }

    /// The golden pairs were scored on x86-64; this runs on every architecture the box
    /// is built for (aarch64 under qemu in CI), the int8 package's integer kernels too.
    #[test]
    fn both_demo_packages_reproduce_their_golden_pairs_here() {
        for (name, bytes) in [
            ("fp32 demo", &include_bytes!("../../models/demo_brushed_metal.kpkg")[..]),
            ("int8 demo", &include_bytes!("../../models/demo_brushed_metal.int8.kpkg")[..]),
        ] {
            let m = Model::from_bytes(bytes, name, &[]).unwrap();
            if let Err(e) = kensa_shared::runtime::replay_golden(&m.runner) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn a_package_that_does_not_reproduce_its_golden_scores_fails_its_self_test() {
        let demo = include_bytes!("../../models/demo_brushed_metal.kpkg");
        let mut pkg = kensa_shared::package::Package::from_bytes(demo).unwrap();
        pkg.manifest.golden[0].score += 5.0;
        let mut m = Model::from_bytes(&pkg.to_bytes(), "altered.kpkg", &[]).unwrap();
        let err = m.self_test(&[]).unwrap_err();
        assert!(err.contains("golden pair 1") && err.contains("does not compute"), "{err}");
    }

    #[test]
    fn a_threshold_overwritten_in_the_file_is_caught_by_the_checksum() {
        let demo = include_bytes!("../../models/demo_brushed_metal.kpkg");
        let threshold = kensa_shared::package::Package::from_bytes(demo).unwrap().manifest.threshold;
        let mut bytes = demo.to_vec();
        let at = bytes.windows(4).position(|w| w == threshold.to_le_bytes()).expect("threshold bytes");
        bytes[at..at + 4].copy_from_slice(&1e9f32.to_le_bytes());
        let err = Model::from_bytes(&bytes, "edited.kpkg", &[]).unwrap_err().to_string();
        assert!(err.contains("edited.kpkg") && err.contains("damaged"), "{err}");
    }

    #[test]
    fn a_box_with_trusted_keys_runs_only_packages_they_signed() {
        use ed25519_dalek::SigningKey;
        let demo = include_bytes!("../../models/demo_brushed_metal.kpkg");
        let (ours, theirs) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let trusted = [ours.verifying_key()];
        let err = Model::from_bytes(demo, "m.kpkg", &trusted).unwrap_err().to_string();
        assert!(err.contains("m.kpkg") && err.contains("not signed"), "{err}");
        let mut pkg = kensa_shared::package::Package::from_bytes(demo).unwrap();
        pkg.sign(&theirs);
        let err = Model::from_bytes(&pkg.to_bytes(), "m.kpkg", &trusted).unwrap_err().to_string();
        assert!(err.contains("not a trusted key"), "{err}");
        pkg.sign(&ours);
        let m = Model::from_bytes(&pkg.to_bytes(), "m.kpkg", &trusted).unwrap();
        assert_eq!(m.manifest().kind, kensa_shared::package::HeadKind::PatchCore);
        // Altered after signing (a lowered threshold): refused even with no trust list.
        pkg.manifest.threshold = 0.0;
        let err = Model::from_bytes(&pkg.to_bytes(), "m.kpkg", &[]).unwrap_err().to_string();
        assert!(err.contains("signature does not verify"), "{err}");
    }
}
