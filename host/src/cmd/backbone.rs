//! `kensa backbone import` and `kensa backbone classify`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kensa_core::backbone::{self, InputScaling, efficientnet};

/// Convert PyTorch weights into an ONNX backbone with feature outputs `blocks`.
pub fn import(
    pth: &Path,
    out: &Path,
    blocks: &[usize],
    with_logits: bool,
    scaling: InputScaling,
) -> Result<()> {
    let spec = efficientnet::GraphSpec { feature_blocks: blocks.to_vec(), with_logits, scaling };
    let imported = backbone::import(pth, &spec)?;
    let onnx = &imported.onnx;
    std::fs::write(out, onnx).with_context(|| format!("writing {}", out.display()))?;
    say!(
        "wrote {} ({}, {:.1} MiB, sha256 {}), outputs: {}{}",
        out.display(),
        imported.name,
        onnx.len() as f64 / (1 << 20) as f64,
        kensa_shared::sha256_hex(onnx),
        imported
            .features
            .iter()
            .map(|(b, s)| format!("block{b} (stride {s})"))
            .collect::<Vec<_>>()
            .join(", "),
        if with_logits { ", logits" } else { "" }
    );
    Ok(())
}

/// Print the top-5 ImageNet classes of each image.
pub fn classify(model: &Path, images: &[PathBuf]) -> Result<()> {
    for (path, top) in images.iter().zip(backbone::classify(model, images)?) {
        let classes: Vec<String> = top.iter().map(|(c, p)| format!("{c} ({:.1}%)", 100.0 * p)).collect();
        say!("{}: {}", path.display(), classes.join(", "));
    }
    Ok(())
}
