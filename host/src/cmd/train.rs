//! `kensa train`: fit a model and say what it rests on (images, threshold rule, curves).

use anyhow::{Context, Result};
use kensa_core::heads::Head;
use kensa_core::model::TrainedModel;
use kensa_core::train::{supervised, train};

use crate::cli::TrainArgs;
use crate::progress::Bar;
use crate::settings::{self, Fit};
use crate::{draw, output};

/// Train as the flags say and write the model.
pub fn run(a: &TrainArgs) -> Result<()> {
    let plan = settings::Train::from_args(a)?;
    output::check_file(&plan.out)?;
    let (ds, name) = plan.data.load()?;
    let bar = Bar::default();
    let mut m = match &plan.fit {
        Fit::Supervised(opts) => supervised::train_supervised(&ds, &name, opts, &bar)?,
        Fit::Anomaly { options, validation_defects } => {
            let val = settings::validation_defects(validation_defects)?;
            train(&ds, &val, &name, options, &bar)?
        }
    };
    m.training.options = toml::to_string(a).context("recording the training options")?;
    output::write_atomic(&plan.out, &m.to_bytes()?)?;
    say!(
        "trained {} on {} good + {} defective images in {:.1} s; threshold {:.4} ({}); wrote {}",
        m.head.name(),
        m.training.images,
        m.training.defect_images,
        m.training.seconds,
        m.threshold.value,
        m.threshold.rule,
        plan.out.display()
    );
    let ev = &m.training.evidence;
    if !ev.good.is_empty() {
        say!(
            "threshold evidence: {} good images scored out of sample ({} folds){}",
            ev.good.len(),
            m.training.folds,
            if ev.defective.is_empty() {
                String::new()
            } else {
                format!(" and {} defective validation images", ev.defective.len())
            }
        );
    }
    for w in &m.training.warnings {
        say!("warning: {w}");
    }
    if let Head::Combined(c) = &m.head {
        say!(
            "combined: patch score = {:.1} × anomaly + {:.1} × classifier, each standardised on good \
             validation images (weight chosen by validation AUROC)",
            c.anomaly_weight,
            1.0 - c.anomaly_weight
        );
    }
    curves(&m, &plan.out)
}

/// The supervised head's loss and accuracy per epoch, as a picture beside the model.
fn curves(m: &TrainedModel, out: &std::path::Path) -> Result<()> {
    let Some(last) = m.training.curves.last() else { return Ok(()) };
    let png = out.with_extension("curves.png");
    draw::curves(&m.training.curves).save(&png).with_context(|| format!("writing {}", png.display()))?;
    say!(
        "{} epochs; last: train loss {:.3} acc {:.3}, validation loss {:.3} acc {:.3}; curves: {}",
        m.training.curves.len(),
        last.train_loss,
        last.train_accuracy,
        last.val_loss,
        last.val_accuracy,
        png.display()
    );
    Ok(())
}
