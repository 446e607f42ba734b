//! `kensa inspect-package`: a package's manifest, checked; `kensa inspect-model`: what a
//! trained model rests on.

use std::path::Path;

use anyhow::{Context, Result};
use kensa_shared::package::{Package, key_hex};

/// Verify the package's checksum (and signature) and print its manifest.
pub fn run(package: &Path, extract_onnx: Option<&Path>) -> Result<()> {
    let bytes = std::fs::read(package).with_context(|| format!("reading package {}", package.display()))?;
    let pkg = Package::from_bytes(&bytes).with_context(|| format!("package {}", package.display()))?;
    let m = &pkg.manifest;
    say!("{}: {} bytes, checksum OK", package.display(), bytes.len());
    say!("kind        {} ({:?})", m.kind, m.precision);
    say!(
        "input       {}x{} {:?} {:?}",
        m.preprocess.width,
        m.preprocess.height,
        m.preprocess.colour,
        m.preprocess.resize
    );
    say!("tiling      {:?}", m.tiling);
    say!("threshold   {:.4} ({})", m.threshold, m.threshold_rule);
    match m.scores_measured {
        Some([lo, hi]) => say!("scores      {lo:.4} to {hi:.4} on the export's test images"),
        None => say!("scores      not measured (exported without test images)"),
    }
    let golden: Vec<String> = m.golden.iter().map(|g| format!("{:.4}", g.score)).collect();
    say!("golden      {} pairs, scores {}", m.golden.len(), golden.join(", "));
    say!("score       {}", m.score);
    say!("training    {}", m.training);
    say!("graph       {} bytes, sha256 {}", pkg.onnx.len(), m.onnx_sha256);
    match &pkg.signature {
        Some(s) => say!("signature   ed25519, valid, by {}", key_hex(&s.public_key)),
        None => say!("signature   none"),
    }
    say!("created     {} (unix)", m.created_unix);
    for (k, v) in &m.metrics {
        say!("metric      {k} = {v:.4}");
    }
    if let Some(path) = extract_onnx {
        std::fs::write(path, &pkg.onnx).with_context(|| format!("writing {}", path.display()))?;
        say!("wrote graph to {}", path.display());
    }
    Ok(())
}

/// Print a model's provenance: data, options, threshold and the evidence behind it.
pub fn model(path: &Path) -> Result<()> {
    let m = kensa_core::model::TrainedModel::load(path)?;
    let t = &m.training;
    let p = m.preprocess;
    say!(
        "{}: {} model, input {}x{} {:?}, tiling {:?}",
        path.display(),
        m.head.name(),
        p.width,
        p.height,
        p.colour,
        m.tiling
    );
    say!(
        "trained on  {} ({} good + {} defective images, {:.1} s, seed {})",
        t.dataset,
        t.images,
        t.defect_images,
        t.seconds,
        t.seed
    );
    say!("features    {}", m.features.join(", "));
    say!("threshold   {:.4} ({})", m.threshold.value, m.threshold.rule);
    let mut good = t.evidence.good.clone();
    good.sort_by(f32::total_cmp);
    if let (Some(lo), Some(hi)) = (good.first(), good.last()) {
        say!(
            "evidence    {} good scores out of sample ({} folds): {lo:.4} .. median {:.4} .. {hi:.4}",
            good.len(),
            t.folds,
            good[good.len() / 2]
        );
    }
    if !t.evidence.defective.is_empty() {
        say!("evidence    {} defective validation scores", t.evidence.defective.len());
    }
    for w in &t.warnings {
        say!("warning     {w}");
    }
    if !t.options.is_empty() {
        say!("options (kensa train --config):\n{}", t.options.trim_end());
    }
    Ok(())
}
