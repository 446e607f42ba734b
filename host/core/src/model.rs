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
use crate::heads::Head;
use crate::heads::classifier::Epoch;

/// Version of the `.kmodel` layout.
pub const MODEL_FORMAT: u16 = 3;
const MAGIC: &[u8; 8] = b"KENSAMDL";

/// How the decision threshold was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ThresholdRule {
    /// Best F1 on labelled validation images that include defects.
    F1Optimal {
        /// Good validation images.
        good: usize,
        /// Defective validation images.
        defective: usize,
    },
    /// The `1 − target` quantile of scores of good images held out from training, so that
    /// about `target` of good parts are rejected.
    FalseRejectRate {
        /// Target false-reject rate.
        target: f64,
        /// Held-out good images it was measured on.
        held_out: usize,
    },
    /// Set by hand.
    Manual,
}

impl std::fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F1Optimal { good, defective } => {
                write!(f, "F1-optimal on {defective} defective + {good} good validation images")
            }
            Self::FalseRejectRate { target, held_out } => {
                write!(f, "false-reject rate {:.1}% on {held_out} held-out good images", 100.0 * target)
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
