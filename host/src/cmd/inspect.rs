//! `kensa inspect-package`: a package's manifest, checked.

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
