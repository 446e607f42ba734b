//! A trained anomaly model: everything needed to score an image, in one file.
//!
//! The file (`.kmodel`, postcard) embeds the backbone ONNX so a model never loses the
//! network it was trained on. [`crate::score::Scorer`] scores images with it as
//! training did; export turns the same model into a single ONNX graph that must agree.

use std::path::Path;

use kensa_shared::preprocess::Preprocess;
use kensa_shared::tiling::Tiling;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ensure, fail};
use crate::evidence::Evidence;
use crate::heads::Head;
use crate::heads::classifier::Epoch;

/// Version of the `.kmodel` layout.
pub const MODEL_FORMAT: u16 = 4;
const MAGIC: &[u8; 8] = b"KENSAMDL";

/// How the decision threshold was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ThresholdRule {
    /// Best F1 on out-of-sample good scores and defective validation images.
    F1Optimal {
        /// Good images scored.
        good: usize,
        /// Defective validation images.
        defective: usize,
    },
    /// The lowest threshold whose false-reject rate is at most `target` with `confidence`
    /// ([`crate::train::threshold`]), from out-of-sample scores of good images.
    FalseRejectRate {
        /// Target false-reject rate.
        target: f64,
        /// Confidence of the bound.
        confidence: f64,
        /// Good images scored.
        good: usize,
        /// Of those, how many the threshold rejects.
        rejected: usize,
        /// Upper bound of the false-reject rate at `confidence`.
        bound: f64,
    },
    /// Set by hand (`--threshold`).
    Manual,
}

impl std::fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F1Optimal { good, defective } => write!(
                f,
                "F1-optimal on {defective} defective validation images and {good} good images scored out of sample"
            ),
            Self::FalseRejectRate { target, confidence, good, rejected, bound } => {
                let (t, c, b) = (100.0 * target, 100.0 * confidence, 100.0 * bound);
                if bound <= target {
                    write!(
                        f,
                        "false-reject rate at most {t:.1} % with {c:.0} % confidence: {rejected} of {good} \
                         out-of-sample good scores reach it"
                    )
                } else {
                    let needed = crate::evidence::images_needed(*target, *confidence);
                    write!(
                        f,
                        "too few good images to show a {t:.1} % false-reject rate: {rejected} of {good} \
                         out-of-sample good scores reach it, which shows at most {b:.1} % with {c:.0} % \
                         confidence; {needed} good images are needed to show {t:.1} %"
                    )
                }
            }
            Self::Manual => write!(f, "set by hand"),
        }
    }
}

/// Decision threshold with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// NG when `score ≥ value`.
    pub value: f32,
    /// Why this value.
    pub rule: ThresholdRule,
}

/// What the model was trained on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Dataset folder as given.
    pub dataset: String,
    /// Good images in the memory bank / Gaussians.
    pub images: usize,
    /// Coreset ratio (PatchCore).
    pub coreset_ratio: Option<f64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Wall-clock training time (s).
    pub seconds: f64,
    /// Defective images learnt from (supervised heads).
    pub defect_images: usize,
    /// Trained on [`crate::dataset::Dataset::split_labelled`]: evaluation must use the
    /// same split's held-out test images.
    pub labelled_split: bool,
    /// Loss and accuracy per epoch (supervised heads).
    pub curves: Vec<Epoch>,
    /// The scores the threshold was chosen on (out-of-sample good, defective validation).
    pub evidence: Evidence,
    /// Cross-validation folds the good scores came from.
    pub folds: usize,
    /// What training found too thin to trust, in words (also shown by `inspect` and the
    /// report).
    pub warnings: Vec<String>,
    /// The options it was trained with, resolved, as a `kensa train --config` file.
    pub options: String,
}

/// A trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedModel {
    /// Backbone ONNX bytes.
    pub backbone: Vec<u8>,
    /// Feature outputs of the backbone used, finest first.
    pub features: Vec<String>,
    /// Pixel pipeline (applied to each tile when tiled).
    pub preprocess: Preprocess,
    /// Cut large images into tiles scored one by one (`None`: the whole image is resized).
    pub tiling: Option<Tiling>,
    /// Share of a model input's map averaged into its score (see `map::image_score`); a
    /// tiled image scores its highest tile.
    pub score_top_share: f32,
    /// Scoring head.
    pub head: Head,
    /// Decision threshold.
    pub threshold: Threshold,
    /// Provenance.
    pub training: TrainingSummary,
}

impl TrainedModel {
    /// Serialise with magic and format version.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&MODEL_FORMAT.to_le_bytes());
        out.extend(postcard::to_stdvec(self)?);
        Ok(out)
    }

    /// Parse bytes written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        ensure!(bytes.len() >= 10 && &bytes[..8] == MAGIC, ModelFile, "not a Kensa model file");
        let v = u16::from_le_bytes([bytes[8], bytes[9]]);
        if v != MODEL_FORMAT {
            fail!(ModelFile, "model format {v} is not supported (this build reads {MODEL_FORMAT})");
        }
        postcard::from_bytes(&bytes[10..])
            .map_err(|e| Error::ModelFile(format!("model file is truncated or corrupt: {e}")))
    }

    /// Write to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?).map_err(Error::io("writing model", path))
    }

    /// Read from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io("reading model", path))?;
        Self::from_bytes(&bytes)
            .map_err(|e| Error::ModelFile(format!("loading model {}: {e}", path.display())))
    }
}
