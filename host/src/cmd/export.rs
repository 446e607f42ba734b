//! `kensa export`: write a model package, measured and gated on test images.

use anyhow::{Context, Result};
use kensa_core::export::{self, ExportOptions};
use kensa_core::model::TrainedModel;

use crate::cli::ExportArgs;
use crate::progress::Bar;
use crate::settings::{self, Data};

/// Build, measure, gate, sign and write the package.
pub fn run(a: &ExportArgs) -> Result<()> {
    let m = TrainedModel::load(&a.model)?;
    let data = match Data::from_args(&a.data) {
        Some(d) => Some(d.for_model(m.training.labelled_split).load()?),
        None => export::training_data(&m).map(|ds| (ds, m.training.dataset.clone())),
    };
    let opts = ExportOptions {
        precision: a.precision.into(),
        max_auroc_drop: a.max_auroc_drop,
        accept_accuracy_drop: a.accept_accuracy_drop,
        sign: a.sign.clone(),
        on_error: settings::on_error(a.data.skip_bad),
    };
    let data = data.as_ref().map(|(ds, name)| (ds, name.as_str()));
    let pkg = export::run(&m, data, &opts, &Bar::default())?;
    let bytes = pkg.to_bytes();
    std::fs::write(&a.out, &bytes).with_context(|| format!("writing {}", a.out.display()))?;
    say!(
        "wrote {} ({:.2} MiB, {} {:?}, threshold {:.4}, graph sha256 {}{})",
        a.out.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        pkg.manifest.kind,
        pkg.manifest.precision,
        pkg.manifest.threshold,
        pkg.manifest.onnx_sha256,
        if pkg.signature.is_some() { ", signed" } else { "" }
    );
    Ok(())
}
