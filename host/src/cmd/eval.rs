//! `kensa eval`: measure a model against ground truth and write the report.

use anyhow::Result;
use kensa_core::eval;
use kensa_core::model::TrainedModel;
use kensa_core::score::Scorer;

use crate::cli::EvalArgs;
use crate::progress::Bar;
use crate::report;
use crate::settings::Data;
use crate::{cmd, output};

/// Score the test set, print the metrics and the decision at the threshold.
pub fn run(a: &EvalArgs) -> Result<()> {
    if let Some(dir) = &a.report {
        output::prepare_dir(dir)?;
    }
    let mut model = TrainedModel::load(&a.model)?;
    cmd::operating_point(&mut model, &a.operating)?;
    let scorer = Scorer::new(model)?;
    let asked = Data::required(&a.data)?;
    let data = asked.clone().for_model(scorer.model.training.labelled_split);
    if data.split && !asked.split {
        say!("the model learnt from part of the defects: scoring the held-out test images of its split");
    }
    let (ds, _) = data.load()?;
    let started = std::time::Instant::now();
    let (m, cases) = eval::evaluate(&scorer, &ds, data.on_error, &Bar::default())?;
    let fmt = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
    say!(
        "image AUROC {}  pixel AUROC {}  AUPRO@0.3 {}  F1-max {}  ({} images, {:.1} s)",
        fmt(m.image_auroc),
        fmt(m.pixel_auroc),
        fmt(m.aupro),
        fmt(m.image_f1_max),
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    let c = m.confusion;
    say!(
        "at threshold {:.4} ({}): {} NG caught, {} escaped, {} good passed, {} false alarms (F1 {:.3})",
        m.threshold,
        m.threshold_rule,
        c.true_ng,
        c.false_ok,
        c.true_ok,
        c.false_ng,
        m.image_f1
    );
    for w in &scorer.model.training.warnings {
        say!("warning: {w}");
    }
    if let Some(dir) = &a.report {
        report::write(dir, &scorer.model, &m, &cases)?;
        say!("report: {}", dir.join("index.html").display());
    }
    Ok(())
}
