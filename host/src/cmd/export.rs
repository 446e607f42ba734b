//! `kensa export`: write a model package, measured and gated on test images.

use anyhow::{Context, Result};
use kensa_core::export::{self, ExportOptions};
use kensa_core::model::TrainedModel;

use crate::cli::ExportArgs;
use crate::progress::Bar;
use crate::settings::{self, Data};
use crate::{cmd, output};

/// Build, measure, gate, sign and write the package.
pub fn run(a: &ExportArgs) -> Result<()> {
    output::check_file(&a.out)?;
    let mut m = TrainedModel::load(&a.model)?;
    cmd::operating_point(&mut m, &a.operating)?;
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
    if data.is_none() {
        say!(
            "no test images: the model was trained on {}, which is not an MVTec folder with test images here; \
             the package is not measured (give --data to measure it)",
            m.training.dataset
        );
    }
    let data = data.as_ref().map(|(ds, name)| (ds, name.as_str()));
    let pkg = export::run(&m, data, &opts, &Bar::default())?;
    let get = |k: &str| pkg.manifest.metrics.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    if let Some(n) = get("test_images") {
        let f = |k: &str| get(k).map_or("n/a".to_string(), |v| format!("{v:.4}"));
        say!(
            "measured as the box runs it on {n} test images: image AUROC {}, pixel AUROC {}, AUPRO {}",
            f("image_auroc"),
            f("pixel_auroc"),
            f("aupro")
        );
        if let (Some(fp32), Some(q)) = (get("image_auroc_fp32"), get("image_auroc")) {
            say!(
                "accuracy guard: image AUROC {q:.4} against {fp32:.4} for fp32, a drop of {:.2} points (limit {:.2})",
                100.0 * (fp32 - q),
                a.max_auroc_drop
            );
        }
        if let (Some(esc), Some(fr)) = (get("escapes"), get("false_rejects")) {
            say!(
                "at threshold {:.4}: {esc} escapes of {} defective, {fr} false rejects of {} good",
                pkg.manifest.threshold,
                get("defective_images").unwrap_or(0.0),
                get("good_images").unwrap_or(0.0)
            );
        }
    }
    let bytes = pkg.to_bytes();
    output::write_atomic(&a.out, &bytes)?;
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

/// `kensa upgrade`: an older package in the current format, sealed on this PC.
pub fn upgrade(
    old: &std::path::Path,
    out: &std::path::Path,
    key: Option<&std::path::Path>,
    data: Option<&std::path::Path>,
) -> Result<()> {
    let bytes = std::fs::read(old).with_context(|| format!("reading {}", old.display()))?;
    let mut pkg = kensa_shared::package::Package::from_format2_bytes(&bytes)
        .with_context(|| format!("{} is not a format-2 package", old.display()))?;
    export::seal(&mut pkg)?;
    if let Some(dir) = data {
        let ds = kensa_core::dataset::Dataset::mvtec(dir)?;
        let on_error = settings::on_error(false);
        pkg.manifest.scores_measured = export::measure(&pkg, &ds, on_error, &Bar::default())?.1;
    }
    if let Some(k) = key {
        pkg.sign(&export::read_signing_key(k)?);
    }
    let bytes = pkg.to_bytes();
    // Read back as a box would before writing it.
    kensa_shared::package::Package::from_bytes(&bytes).context("the upgraded package does not verify")?;
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    say!(
        "wrote {} (format {}, {} golden pairs, threshold {:.4}{})",
        out.display(),
        kensa_shared::package::PACKAGE_FORMAT,
        pkg.manifest.golden.len(),
        pkg.manifest.threshold,
        if pkg.signature.is_some() { ", signed" } else { "" }
    );
    Ok(())
}
