//! A trained anomaly model: everything needed to score an image, in one file.
//!
//! The file (`.kmodel`, postcard) embeds the backbone ONNX so a model never loses the
//! network it was trained on. [`Scorer`] is the training-time scoring pipeline:
//! preprocess → backbone (tract) → embed → head → map → score. Export turns the same
//! model into a single ONNX graph that must agree with it.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use image::DynamicImage;
use kensa_shared::preprocess::Preprocess;
use kensa_shared::tiling::{Stitcher, Tile, Tiling};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::anomaly::{embed, map, padim::Padim, patchcore::PatchCore};
use crate::backbone::Backbone;
use crate::supervised::classifier::{Classifier, Epoch};

/// Version of the `.kmodel` layout.
pub const MODEL_FORMAT: u16 = 3;
const MAGIC: &[u8; 8] = b"KENSAMDL";

/// The scoring head: embedded patches in, one score per patch out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Head {
    /// Nearest-neighbour distance to a coreset memory bank.
    PatchCore(PatchCore),
    /// Per-position Mahalanobis distance.
    Padim(Padim),
    /// A linear OK/NG classifier per patch, learnt from labelled defects.
    Supervised(Classifier),
    /// Both an anomaly head and a classifier (see [`Combined`]).
    Combined(Combined),
}

impl Head {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Head::PatchCore(_) => "patchcore",
            Head::Padim(_) => "padim",
            Head::Supervised(_) => "supervised",
            Head::Combined(c) => match *c.anomaly {
                Head::Padim(_) => "combined-padim",
                _ => "combined-patchcore",
            },
        }
    }

    /// Patch-score grid of embedded patches.
    pub fn patch_scores(&self, p: &embed::Patches) -> Vec<f32> {
        match self {
            Head::PatchCore(pc) => pc.score(p, faer::Par::Seq),
            Head::Padim(pd) => pd.score(p),
            Head::Supervised(c) => c.score(p),
            Head::Combined(c) => {
                mix(&c.anomaly.patch_scores(p), &c.classifier.score(p), c.anomaly_scale, c.classifier_scale)
            }
        }
    }
}

/// The combined patch scores: `anomaly` and `classifier` grids through their (weighted)
/// standardising maps, added.
pub fn mix(anomaly: &[f32], classifier: &[f32], a: Affine, c: Affine) -> Vec<f32> {
    anomaly.iter().zip(classifier).map(|(&x, &y)| a.apply(x) + c.apply(y)).collect()
}

/// `value · scale + offset`: puts a head's scores in units of good parts' spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    /// Multiplier (> 0, so the order of scores is kept).
    pub scale: f32,
    /// Added after scaling.
    pub offset: f32,
}

impl Affine {
    /// The map taking `mean` to 0 and `mean + std` to 1.
    pub fn standardising(mean: f32, std: f32) -> Self {
        let scale = 1.0 / std.max(1e-6);
        Self { scale, offset: -mean * scale }
    }

    /// This map followed by multiplying with `k`.
    pub fn times(self, k: f32) -> Self {
        Self { scale: self.scale * k, offset: self.offset * k }
    }

    /// Apply to one value.
    pub fn apply(&self, v: f32) -> f32 {
        v * self.scale + self.offset
    }
}

/// Anomaly head and classifier together, for lines that have some labelled defects but
/// must also catch kinds never seen. Rule: each head's patch scores are standardised on
/// good validation images (0 = their mean image score, 1 = one standard deviation
/// above), and a patch scores `w · anomaly + (1 − w) · classifier`, with `w` the value
/// in 0, 0.1, …, 1 that ranks the validation images best (image AUROC; ties go to the
/// value nearest 0.5). `w` = 1 or 0 is one head alone, so on validation images the
/// combination is never worse than the better head. Resizing, blur and pooling are
/// linear with unit gain, so the standardisation carries over to image scores.
/// The weights are folded into the two affine maps, which then simply add.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Combined {
    /// PatchCore or PaDiM.
    pub anomaly: Box<Head>,
    /// The OK/NG head.
    pub classifier: Classifier,
    /// Standardises anomaly scores, times `anomaly_weight`.
    pub anomaly_scale: Affine,
    /// Standardises classifier scores, times `1 − anomaly_weight`.
    pub classifier_scale: Affine,
    /// `w`: the anomaly head's share.
    pub anomaly_weight: f32,
}

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
        ensure!(bytes.len() >= 10 && &bytes[..8] == MAGIC, "not a Kensa model file");
        let v = u16::from_le_bytes([bytes[8], bytes[9]]);
        if v != MODEL_FORMAT {
            bail!("model format {v} is not supported (this build reads {MODEL_FORMAT})");
        }
        postcard::from_bytes(&bytes[10..]).context("model file is truncated or corrupt")
    }

    /// Write to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?).with_context(|| format!("writing model {}", path.display()))
    }

    /// Read from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("loading model {}", path.display()))
    }

    /// Map and score of one model input's embedded patches.
    pub fn score_patches(&self, pt: &embed::Patches) -> Scored {
        let p = self.preprocess;
        let (h, w) = (p.height as usize, p.width as usize);
        let m = map::anomaly_map(&self.head.patch_scores(pt), pt.h, pt.w, h, w);
        Scored { score: map::image_score(&m, w, self.score_top_share), map: m, width: w, height: h }
    }

    /// The model inputs cut from `img`: its tiles, or the whole image as one "tile".
    pub fn crops(&self, img: &DynamicImage) -> Vec<(Tile, DynamicImage)> {
        kensa_shared::tiling::crops(self.tiling, img)
    }
}

/// Images per backbone run.
pub const BATCH: usize = 4;

/// Preprocess `images` and extract patch embeddings, in order, using all cores.
pub fn extract_patches(
    backbone: &Backbone,
    pre: &Preprocess,
    images: &[DynamicImage],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<embed::Patches>> {
    let chunks: Vec<Vec<embed::Patches>> = images
        .par_chunks(backbone.batch)
        .map(|chunk| {
            let mut input = Vec::with_capacity(chunk.len() * pre.len());
            for img in chunk {
                input.extend(pre.apply(img));
            }
            let maps = backbone.run(&input, chunk.len())?;
            progress(chunk.len());
            Ok(maps.iter().map(|m| embed::embed(m)).collect())
        })
        .collect::<Result<_>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// One scored image.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Anomaly map, row-major `width`×`height`: the model input resolution, or for a
    /// tiled model the whole image at the tiles' model-px-per-source-px scale.
    pub map: Vec<f32>,
    /// Map width.
    pub width: usize,
    /// Map height.
    pub height: usize,
    /// Image score (map maximum).
    pub score: f32,
}

impl Scored {
    /// `img` as this map sees it (the model input, or the whole image at map scale), in
    /// the colour policy of `pre`, for overlays.
    pub fn view(&self, pre: &Preprocess, img: &DynamicImage) -> image::RgbImage {
        Preprocess { width: self.width as u32, height: self.height as u32, ..*pre }.resized_rgb(img)
    }

    /// Source-image px per map px (x, y) for an image of `src_w`×`src_h`.
    pub fn source_per_map_px(&self, src_w: u32, src_h: u32) -> (f64, f64) {
        (src_w as f64 / self.width as f64, src_h as f64 / self.height as f64)
    }

    /// Predicted defects at `threshold`, in map pixels (for overlays).
    pub fn map_boxes(&self, threshold: f32) -> Vec<map::DefectBox> {
        map::defect_boxes(&self.map, self.width, self.height, threshold)
    }

    /// Predicted defects at `threshold`, in source-image pixels.
    pub fn boxes(&self, src_w: u32, src_h: u32, threshold: f32) -> Vec<map::DefectBox> {
        self.to_source(&self.map_boxes(threshold), src_w, src_h)
    }

    /// `boxes` (map pixels) in pixels of the `src_w`×`src_h` source image.
    pub fn to_source(&self, boxes: &[map::DefectBox], src_w: u32, src_h: u32) -> Vec<map::DefectBox> {
        let (sx, sy) = self.source_per_map_px(src_w, src_h);
        boxes
            .iter()
            .map(|&b| map::DefectBox {
                x0: (b.x0 as f64 * sx).floor() as u32,
                y0: (b.y0 as f64 * sy).floor() as u32,
                x1: (((b.x1 + 1) as f64 * sx).ceil() as u32).saturating_sub(1).min(src_w - 1),
                y1: (((b.y1 + 1) as f64 * sy).ceil() as u32).saturating_sub(1).min(src_h - 1),
                ..b
            })
            .collect()
    }
}

/// Wall time of each scoring stage for one image.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Resize and colour conversion.
    pub preprocess: std::time::Duration,
    /// CNN forward pass (tract).
    pub backbone: std::time::Duration,
    /// Pooling, alignment and concatenation of feature maps.
    pub embed: std::time::Duration,
    /// Nearest-neighbour search (PatchCore) or Mahalanobis distances (PaDiM).
    pub head: std::time::Duration,
    /// Upsampling, blur and image score.
    pub map: std::time::Duration,
}

impl StageTimes {
    /// Sum of the stages.
    pub fn total(&self) -> std::time::Duration {
        self.preprocess + self.backbone + self.embed + self.head + self.map
    }
}

/// The training-time scoring pipeline.
#[derive(Debug, Clone)]
pub struct Scorer {
    backbone: Backbone,
    /// The model scored with.
    pub model: TrainedModel,
}

impl Scorer {
    /// Load the backbone for the model's input size, running [`BATCH`] images at a time.
    pub fn new(model: TrainedModel) -> Result<Self> {
        Self::with_batch(model, BATCH)
    }

    /// Load the backbone running `batch` images at a time (1 for one image at a time:
    /// a partly filled batch costs as much as a full one).
    pub fn with_batch(model: TrainedModel, batch: usize) -> Result<Self> {
        let p = model.preprocess;
        let backbone =
            Backbone::load(&model.backbone, &model.features, p.height as usize, p.width as usize, batch)?;
        Ok(Self { backbone, model })
    }

    /// Score one (untiled) image on the calling thread, timing each stage.
    pub fn score_timed(&self, img: &DynamicImage) -> Result<(Scored, StageTimes)> {
        anyhow::ensure!(self.model.tiling.is_none(), "stage timing covers untiled models only");
        let t0 = std::time::Instant::now();
        let input = self.model.preprocess.apply(img);
        let t1 = std::time::Instant::now();
        let maps = self.backbone.run(&input, 1)?;
        let t2 = std::time::Instant::now();
        let patches = embed::embed(&maps[0]);
        let t3 = std::time::Instant::now();
        let grid = self.patch_scores(&patches);
        let t4 = std::time::Instant::now();
        let p = self.model.preprocess;
        let m = map::anomaly_map(&grid, patches.h, patches.w, p.height as usize, p.width as usize);
        let scored = Scored {
            score: map::image_score(&m, p.width as usize, self.model.score_top_share),
            map: m,
            width: p.width as usize,
            height: p.height as usize,
        };
        let t5 = std::time::Instant::now();
        Ok((
            scored,
            StageTimes {
                preprocess: t1 - t0,
                backbone: t2 - t1,
                embed: t3 - t2,
                head: t4 - t3,
                map: t5 - t4,
            },
        ))
    }

    /// Patch-score grid of embedded patches.
    pub fn patch_scores(&self, p: &embed::Patches) -> Vec<f32> {
        self.model.head.patch_scores(p)
    }

    /// Score images (both cores); `progress` is told how many finished.
    pub fn score(&self, images: &[DynamicImage], progress: &(dyn Fn(usize) + Sync)) -> Result<Vec<Scored>> {
        match self.model.tiling {
            None => {
                let patches = extract_patches(&self.backbone, &self.model.preprocess, images, &|_| ())?;
                Ok(patches
                    .par_iter()
                    .map(|pt| {
                        let s = self.tile_map(pt);
                        progress(1);
                        s
                    })
                    .collect())
            }
            // One image at a time: its tiles fill the batches and both cores, and memory
            // stays bounded by one image's tiles.
            Some(_) => images
                .iter()
                .map(|img| {
                    let s = self.score_tiled(img)?;
                    progress(1);
                    Ok(s)
                })
                .collect(),
        }
    }

    /// The anomaly map of one model input.
    fn tile_map(&self, pt: &embed::Patches) -> Scored {
        self.model.score_patches(pt)
    }

    fn score_tiled(&self, img: &DynamicImage) -> Result<Scored> {
        let crops = self.model.crops(img);
        let pics: Vec<DynamicImage> = crops.iter().map(|(_, c)| c.clone()).collect();
        let patches = extract_patches(&self.backbone, &self.model.preprocess, &pics, &|_| ())?;
        let maps: Vec<Scored> = patches.par_iter().map(|pt| self.tile_map(pt)).collect();
        let (t0, m0) = (crops[0].0, &maps[0]);
        let mut st = Stitcher::new(img.width(), img.height(), t0.w, t0.h, m0.width, m0.height);
        for ((tile, _), m) in crops.iter().zip(&maps) {
            st.add(*tile, &m.map, m.width, m.height);
        }
        let (width, height) = (st.width, st.height);
        let map = st.finish();
        let score = maps.iter().map(|m| m.score).fold(f32::NEG_INFINITY, f32::max);
        let score = if maps.iter().any(|m| m.score.is_nan()) { f32::NAN } else { score };
        Ok(Scored { score, map, width, height })
    }
}
