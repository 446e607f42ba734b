//! The model on the box: a verified package run by tract.
//!
//! Preprocessing is the shared implementation, so the box feeds the graph exactly what
//! `kensa eval` fed it. A tiled package scores each tile and takes the highest score.

use std::sync::Arc;

use image::DynamicImage;
use kensa_shared::package::{Manifest, Package};
use tract_onnx::prelude::*;

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
        source: kensa_shared::package::PackageError,
    },
    /// tract refused the graph.
    #[error("model package {path}: the graph does not load: {reason}")]
    Graph {
        /// The file.
        path: String,
        /// tract's message.
        reason: String,
    },
}

/// A package ready to score frames.
#[derive(Clone)]
pub struct Model {
    manifest: Manifest,
    plan: Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("manifest", &self.manifest).finish_non_exhaustive()
    }
}

impl Model {
    /// Load and verify a package file.
    pub fn load(path: &std::path::Path) -> Result<Self, ModelError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: name.clone(), source })?;
        Self::from_bytes(&bytes, &name)
    }

    /// Verify and load package bytes (`name` only names them in errors).
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, ModelError> {
        let pkg =
            Package::from_bytes(bytes).map_err(|source| ModelError::Package { path: name.into(), source })?;
        let graph_err = |e: anyhow::Error| ModelError::Graph { path: name.into(), reason: format!("{e:#}") };
        let p = pkg.manifest.preprocess;
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(&pkg.onnx))
            .and_then(|mut m| {
                m.set_input_fact(0, u8::fact([1, 3, p.height as usize, p.width as usize]).into())?;
                m.into_optimized()?.into_runnable()
            })
            .map_err(graph_err)?;
        Ok(Self { manifest: pkg.manifest, plan })
    }

    /// The package manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Score one model input (already cut, if tiled).
    fn score_input(&self, img: &DynamicImage) -> Result<f32, String> {
        let p = self.manifest.preprocess;
        let pixels: Vec<u8> = p.apply(img).iter().map(|&v| v as u8).collect();
        let input =
            tract_ndarray::Array4::from_shape_vec((1, 3, p.height as usize, p.width as usize), pixels)
                .map_err(|e| e.to_string())?;
        let out = self.plan.run(tvec!(Tensor::from(input).into())).map_err(|e| format!("{e:#}"))?;
        let score = out
            .get(1)
            .ok_or("the graph has no score output")?
            .to_plain_array_view::<f32>()
            .map_err(|e| e.to_string())?
            .iter()
            .next()
            .copied()
            .ok_or("the score output is empty")?;
        Ok(score)
    }
}

impl Inspector for Model {
    fn score(&mut self, image: &DynamicImage) -> Result<f32, String> {
        let mut best = f32::NEG_INFINITY;
        for (_, c) in kensa_shared::tiling::crops(self.manifest.tiling, image) {
            let s = self.score_input(&c)?;
            if s.is_nan() {
                return Ok(s);
            }
            best = best.max(s);
        }
        Ok(best)
    }

    fn threshold(&self) -> f32 {
        self.manifest.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_package_is_refused_by_name() {
        let err = Model::from_bytes(b"KENSAPKG\x01\x00\xff\xff\xff\xff", "line3.kpkg").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line3.kpkg") && msg.contains("truncated"), "{msg}");
        let err = Model::load(std::path::Path::new("/nonexistent/m.kpkg")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/m.kpkg"), "{err}");
    }
}
