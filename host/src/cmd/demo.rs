//! `kensa demo`: generated parts through training, evaluation and the report.

use std::path::Path;

use anyhow::Result;
use kensa_core::dataset::{Dataset, OnError};
use kensa_core::eval;
use kensa_core::score::Scorer;
use kensa_core::train::{Method, TrainOptions, train};
use kensa_shared::synth::{Surface, SynthSpec};

use super::synth::{Counts, write_dataset};
use crate::progress::Bar;
use crate::report;

/// Write a dataset of `surface` parts under `out`, train, evaluate and report.
pub fn run(out: &Path, surface: Surface) -> Result<()> {
    let data = out.join("data");
    let counts = Counts { train: 60, test_good: 20, test_defect: 20 };
    let n = write_dataset(&data, &SynthSpec::square(surface, 256), counts, 1)?;
    say!("1/3 generated {n} images of {} parts with debris in {}", surface.name(), data.display());
    let ds = Dataset::mvtec(&data)?;
    let opts = TrainOptions { method: Method::PatchCore { coreset: 0.1 }, ..Default::default() };
    let bar = Bar::default();
    let model = train(&ds, &[], &data.display().to_string(), &opts, &bar)?;
    let model_path = out.join("model.kmodel");
    model.save(&model_path)?;
    say!(
        "2/3 trained PatchCore on {} good images in {:.1} s, threshold {:.3} ({}) -> {}",
        model.training.images,
        model.training.seconds,
        model.threshold.value,
        model.threshold.rule,
        model_path.display()
    );
    let scorer = Scorer::new(model)?;
    let (m, cases) = eval::evaluate(&scorer, &ds, OnError::Fail, &bar)?;
    let report = out.join("report");
    report::write(&report, &scorer.model, &m, &cases)?;
    let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    let c = m.confusion;
    say!(
        "3/3 evaluated {} parts: image AUROC {}, pixel AUROC {}, AUPRO {}; at the threshold {} of {} defects caught, {} false alarms in {} good",
        cases.len(),
        f(m.image_auroc),
        f(m.pixel_auroc),
        f(m.aupro),
        c.true_ng,
        m.defective_images,
        c.false_ng,
        m.good_images
    );
    say!("report: {}", report.join("index.html").display());
    Ok(())
}
