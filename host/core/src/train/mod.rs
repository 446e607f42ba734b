//! Training: good images in, a [`TrainedModel`] with a justified threshold out.
//!
//! Every k-th good training image (by name) is held out of the bank; the threshold comes
//! from those (false-reject-rate rule) or, when defective validation images are given,
//! from the best F1 on held-out good + defective images ([`threshold`]). With labelled
//! defects, [`supervised`] fits an OK/NG head on [`augment`]ed views.

pub mod augment;
pub mod supervised;
pub mod threshold;

use std::time::Instant;

use image::DynamicImage;
use kensa_shared::preprocess::{Colour, Preprocess, Resize};

use kensa_shared::tiling::Tiling;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Progress;
use crate::backbone::Backbone;
use crate::dataset::{Dataset, Item, OnError, open_all};
use crate::error::{Result, ensure};
use crate::heads::{Head, Padim, PatchCore};
use crate::model::{Threshold, ThresholdRule, TrainedModel, TrainingSummary};
use crate::score::{BATCH, Scorer, extract_patches};

/// The backbone shipped in `models/` (EfficientNet-Lite0 up to block 10, see its NOTICE).
pub const DEFAULT_BACKBONE: &[u8] = include_bytes!("../../../../models/efficientnet_lite0_features.onnx");
/// Feature outputs used by default: stride 8 and stride 16 (chosen by measurement, see
/// docs/benchmarks.md).
pub const DEFAULT_FEATURES: [&str; 2] = ["block4", "block10"];

/// Default patch budget before the coreset: 2 M patches of 152 values are 1.2 GB.
pub const DEFAULT_MAX_PATCHES: usize = 2_000_000;

/// Share of the anomaly map averaged into the image score (see `map::image_score`).
pub const DEFAULT_SCORE_TOP_SHARE: f32 = 0.03;

/// Images decoded and embedded at a time while gathering training patches.
const GATHER_IMAGES: usize = 16;

/// Which head to fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// PatchCore keeping `coreset` of the patches.
    PatchCore {
        /// Share of patches kept (0–1].
        coreset: f64,
    },
    /// PaDiM over `channels` random channels.
    Padim {
        /// Channels kept.
        channels: usize,
    },
}

/// Everything `train` needs besides the data.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Head.
    pub method: Method,
    /// Model input side (px).
    pub size: u32,
    /// Colour handling.
    pub colour: Colour,
    /// Backbone ONNX bytes.
    pub backbone: Vec<u8>,
    /// Feature outputs of the backbone.
    pub features: Vec<String>,
    /// Share of good training images held out for the threshold.
    pub holdout: f64,
    /// Target false-reject rate for the threshold rule.
    pub frr: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Unreadable images: fail or skip.
    pub on_error: OnError,
    /// Cut images into tiles (for images far larger than the model input).
    pub tiling: Option<Tiling>,
    /// Share of the map averaged into the image score (0: the maximum).
    pub score_top_share: f32,
    /// PatchCore: most patches gathered before the coreset (a random share of each
    /// image's patches beyond it), which bounds training memory for tiled images.
    pub max_patches: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            method: Method::PatchCore { coreset: 0.01 },
            size: 256,
            colour: Colour::Gray,
            backbone: DEFAULT_BACKBONE.to_vec(),
            features: DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect(),
            holdout: 0.1,
            frr: 0.01,
            seed: 0,
            on_error: OnError::Fail,
            tiling: None,
            score_top_share: DEFAULT_SCORE_TOP_SHARE,
            max_patches: DEFAULT_MAX_PATCHES,
        }
    }
}

/// Split good images: every `k`-th by name is held out.
fn split_holdout(items: &[Item], share: f64) -> (Vec<Item>, Vec<Item>) {
    if share <= 0.0 || items.len() < 2 {
        return (items.to_vec(), Vec::new());
    }
    let k = ((1.0 / share).round() as usize).clamp(2, items.len());
    let (mut fit, mut held) = (Vec::new(), Vec::new());
    for (i, it) in items.iter().enumerate() {
        if i % k == k - 1 { held.push(it.clone()) } else { fit.push(it.clone()) }
    }
    (fit, held)
}

/// Fit a model on `ds.train` (good). The threshold comes from held-out good images plus
/// `validation_defects` (never test images: those would grade the model on its own exam).
pub fn train(
    ds: &Dataset,
    validation_defects: &[Item],
    dataset_name: &str,
    opts: &TrainOptions,
    progress: &dyn Progress,
) -> Result<TrainedModel> {
    let started = Instant::now();
    let pre =
        Preprocess { width: opts.size, height: opts.size, resize: Resize::Stretch, colour: opts.colour };
    let (fit_items, held_items) = split_holdout(&ds.train, opts.holdout);
    ensure!(fit_items.len() >= 2, Dataset, "need at least 2 good training images, found {}", fit_items.len());
    let backbone =
        Backbone::load(&opts.backbone, &opts.features, opts.size as usize, opts.size as usize, BATCH)?;
    if let Some(t) = opts.tiling {
        t.validate()?;
    }
    let gathered = gather(&fit_items, opts, &backbone, &pre, progress)?;
    let images = gathered.images;
    tracing::info!(images, seconds = started.elapsed().as_secs_f64(), "features extracted");
    let head_started = Instant::now();
    let head = fit_head(opts, gathered, progress)?;
    tracing::info!(seconds = head_started.elapsed().as_secs_f64(), "{} head fitted", head.name());

    let mut model = TrainedModel {
        backbone: opts.backbone.clone(),
        features: opts.features.clone(),
        preprocess: pre,
        tiling: opts.tiling,
        score_top_share: opts.score_top_share,
        head,
        threshold: Threshold { value: f32::INFINITY, rule: ThresholdRule::Manual },
        training: TrainingSummary {
            dataset: dataset_name.to_string(),
            images,
            coreset_ratio: match opts.method {
                Method::PatchCore { coreset, .. } => Some(coreset),
                Method::Padim { .. } => None,
            },
            seed: opts.seed,
            labelled_split: !ds.validation.is_empty(),
            ..TrainingSummary::default()
        },
    };
    // Threshold from held-out good images, plus defective validation images if any.
    let mut val_items = held_items;
    val_items.extend(validation_defects.iter().cloned());
    val_items.extend(ds.validation.iter().cloned());
    if !val_items.is_empty() {
        let scorer = Scorer::new(model.clone())?;
        let (items, images): (Vec<Item>, Vec<DynamicImage>) =
            open_all(&val_items, opts.on_error)?.into_iter().unzip();
        progress.begin("validation", images.len());
        let scored = scorer.score(&images, &|n| progress.advance(n))?;
        progress.end();
        let scores: Vec<f32> = scored.iter().map(|s| s.score).collect();
        let positive: Vec<bool> = items.iter().map(Item::is_defect).collect();
        model.threshold = threshold::choose(&scores, &positive, opts.frr);
    }
    model.training.seconds = started.elapsed().as_secs_f64();
    Ok(model)
}

/// What the good training images gave: PatchCore's bank candidates or PaDiM's grids.
struct Gathered {
    /// Images read.
    images: usize,
    /// PatchCore: candidate rows, `dim` values each.
    rows: Vec<f32>,
    dim: usize,
    /// PaDiM: whole patch grids.
    grids: Vec<crate::embed::Patches>,
}

/// Embed `fit_items` a few images at a time, so that only one group of decoded images
/// (and their tiles) is in memory besides what is kept.
fn gather(
    fit_items: &[Item],
    opts: &TrainOptions,
    backbone: &Backbone,
    pre: &Preprocess,
    progress: &dyn Progress,
) -> Result<Gathered> {
    progress.begin("features", fit_items.len());
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5EED);
    let mut g = Gathered { images: 0, rows: Vec::new(), dim: 0, grids: Vec::new() };
    for group in fit_items.chunks(GATHER_IMAGES) {
        let opened = open_all(group, opts.on_error)?;
        g.images += opened.len();
        let crops: Vec<DynamicImage> = opened
            .into_iter()
            .flat_map(|(_, img)| kensa_shared::tiling::crops(opts.tiling, &img).into_iter().map(|(_, c)| c))
            .collect();
        let per_image = crops.len().div_ceil(group.len().max(1));
        let patches = extract_patches(backbone, pre, &crops, &|_| ())?;
        progress.advance(group.len());
        match opts.method {
            Method::PatchCore { .. } => {
                // Budget per crop so that the whole set stays within `max_patches`.
                let budget = (opts.max_patches / (fit_items.len() * per_image).max(1)).max(1);
                for p in &patches {
                    g.dim = p.dim;
                    if p.rows() <= budget {
                        g.rows.extend_from_slice(&p.data);
                    } else {
                        for i in rand::seq::index::sample(&mut rng, p.rows(), budget) {
                            g.rows.extend_from_slice(p.row(i));
                        }
                    }
                }
            }
            Method::Padim { .. } => g.grids.extend(patches),
        }
    }
    progress.end();
    Ok(g)
}

/// The head of `opts.method` on what [`gather`] kept.
fn fit_head(opts: &TrainOptions, g: Gathered, progress: &dyn Progress) -> Result<Head> {
    Ok(match opts.method {
        Method::PatchCore { coreset } => {
            ensure!(coreset > 0.0 && coreset <= 1.0, Invalid, "coreset ratio {coreset} must be in (0, 1]");
            let total = g.rows.len() / g.dim.max(1);
            let k = ((total as f64 * coreset).ceil() as usize).min(total);
            progress.begin("coreset", k);
            let pc = PatchCore::fit(g.rows, g.dim, coreset, opts.seed, |i| {
                if i % 64 == 0 {
                    progress.advance(64.min(i));
                }
            });
            progress.end();
            Head::PatchCore(pc)
        }
        Method::Padim { channels } => Head::Padim(Padim::fit(&g.grids, channels, opts.seed)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_every_kth_by_name() {
        let items: Vec<Item> = (0..20)
            .map(|i| Item {
                path: format!("{i:02}.png").into(),
                label: crate::dataset::Label::Good,
                mask: None,
            })
            .collect();
        let (fit, held) = split_holdout(&items, 0.1);
        assert_eq!((fit.len(), held.len()), (18, 2));
        assert_eq!(held[0].path.to_str(), Some("09.png"));
    }
}
