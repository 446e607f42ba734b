//! Training: good images in, a [`TrainedModel`] with a justified threshold out.
//!
//! Every good training image goes into the bank, and every one is also scored by a
//! model that did not see it: the images are dealt into folds by name, and each fold is
//! scored against a bank (or Gaussians) built without it. The threshold rests on those
//! out-of-sample scores, all N of them, plus any defective validation images
//! ([`threshold`]). With labelled defects, [`supervised`] fits an OK/NG head on
//! [`augment`]ed views.

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
use threshold::Evidence;

/// The backbone shipped in `models/` (EfficientNet-Lite0 up to block 10, see its NOTICE).
pub const DEFAULT_BACKBONE: &[u8] = include_bytes!("../../../../models/efficientnet_lite0_features.onnx");
/// Feature outputs used by default: stride 8 and stride 16 (chosen by measurement, see
/// docs/benchmarks.md).
pub const DEFAULT_FEATURES: [&str; 2] = ["block4", "block10"];

/// Default patch budget before the coreset: 2 M patches of 152 values are 1.2 GB.
pub const DEFAULT_MAX_PATCHES: usize = 2_000_000;

/// Share of the anomaly map averaged into the image score (see `map::image_score`).
pub const DEFAULT_SCORE_TOP_SHARE: f32 = 0.03;

/// Folds for out-of-sample scores: each fold's bank sees 80 % of the images.
pub const DEFAULT_FOLDS: usize = 5;

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
    /// Folds good images are dealt into for out-of-sample scores (at least 2).
    pub folds: usize,
    /// Target false-reject rate for the threshold rule.
    pub frr: f64,
    /// Confidence with which the false-reject rate must be shown.
    pub confidence: f64,
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
            folds: DEFAULT_FOLDS,
            frr: 0.01,
            confidence: threshold::DEFAULT_CONFIDENCE,
            seed: 0,
            on_error: OnError::Fail,
            tiling: None,
            score_top_share: DEFAULT_SCORE_TOP_SHARE,
            max_patches: DEFAULT_MAX_PATCHES,
        }
    }
}

/// Fit a model on `ds.train` (good). The threshold comes from out-of-sample scores of
/// those images plus `validation_defects` and `ds.validation` (never test images: those
/// would grade the model on its own exam).
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
    ensure!(opts.folds >= 2, Invalid, "out-of-sample scoring needs at least 2 folds, got {}", opts.folds);
    ensure!(
        opts.frr > 0.0 && opts.frr < 1.0,
        Invalid,
        "target false-reject rate {} must be between 0 and 1",
        opts.frr
    );
    ensure!(
        opts.confidence > 0.0 && opts.confidence < 1.0,
        Invalid,
        "confidence {} must be between 0 and 1",
        opts.confidence
    );
    ensure!(ds.train.len() >= 2, Dataset, "need at least 2 good training images, found {}", ds.train.len());
    let backbone =
        Backbone::load(&opts.backbone, &opts.features, opts.size as usize, opts.size as usize, BATCH)?;
    if let Some(t) = opts.tiling {
        t.validate()?;
    }
    let mut gathered = gather(&ds.train, opts, &backbone, &pre, progress)?;
    let kept = std::mem::take(&mut gathered.kept);
    ensure!(kept.len() >= 2, Dataset, "need at least 2 readable good training images, found {}", kept.len());
    let folds = opts.folds.min(kept.len());
    tracing::info!(images = kept.len(), seconds = started.elapsed().as_secs_f64(), "features extracted");
    let head_started = Instant::now();
    let (head, fold_heads) = fit_head(opts, gathered, folds, progress)?;
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
            images: kept.len(),
            coreset_ratio: match opts.method {
                Method::PatchCore { coreset, .. } => Some(coreset),
                Method::Padim { .. } => None,
            },
            seed: opts.seed,
            labelled_split: !ds.validation.is_empty(),
            folds,
            ..TrainingSummary::default()
        },
    };
    let mut scorer = Scorer::new(model.clone())?;
    let mut evidence = Evidence { good: vec![f32::NAN; kept.len()], defective: Vec::new() };
    progress.begin("out-of-sample scores", kept.len());
    for (f, fold_head) in fold_heads.into_iter().enumerate() {
        scorer.model.head = fold_head;
        let members: Vec<usize> = (0..kept.len()).filter(|i| i % folds == f).collect();
        for group in members.chunks(GATHER_IMAGES) {
            let items: Vec<Item> = group.iter().map(|&i| kept[i].clone()).collect();
            let images: Vec<DynamicImage> =
                open_all(&items, OnError::Fail)?.into_iter().map(|(_, im)| im).collect();
            let scored = scorer.score(&images, &|n| progress.advance(n))?;
            for (&i, s) in group.iter().zip(scored) {
                evidence.good[i] = s.score;
            }
        }
    }
    progress.end();
    scorer.model.head = model.head.clone();

    // Validation images (not trained on) are scored by the final model.
    let mut val_items: Vec<Item> = validation_defects.to_vec();
    val_items.extend(ds.validation.iter().cloned());
    if !val_items.is_empty() {
        let (items, images): (Vec<Item>, Vec<DynamicImage>) =
            open_all(&val_items, opts.on_error)?.into_iter().unzip();
        progress.begin("validation", images.len());
        let scored = scorer.score(&images, &|n| progress.advance(n))?;
        progress.end();
        for (item, s) in items.iter().zip(scored) {
            if item.is_defect() { evidence.defective.push(s.score) } else { evidence.good.push(s.score) }
        }
    }
    model.threshold = threshold::choose(&evidence, opts.frr, opts.confidence);
    model.training.warnings = threshold::warnings(&model.threshold, &evidence, opts.frr, opts.confidence);
    model.training.evidence = evidence;
    model.training.seconds = started.elapsed().as_secs_f64();
    Ok(model)
}

/// What the good training images gave: PatchCore's bank candidates or PaDiM's grids,
/// each tagged with the fold of its image.
struct Gathered {
    /// Images read, in order; image `i` is in fold `i % folds`.
    kept: Vec<Item>,
    /// PatchCore: candidate rows, `dim` values each, and the image each came from.
    rows: Vec<f32>,
    row_image: Vec<u32>,
    dim: usize,
    /// PaDiM: whole patch grids and the image each came from.
    grids: Vec<crate::embed::Patches>,
    grid_image: Vec<u32>,
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
    let mut g = Gathered {
        kept: Vec::new(),
        rows: Vec::new(),
        row_image: Vec::new(),
        dim: 0,
        grids: Vec::new(),
        grid_image: Vec::new(),
    };
    // A tiled image is dozens of model inputs: one at a time, so progress moves per image.
    let group_size = if opts.tiling.is_some() { 1 } else { GATHER_IMAGES };
    for group in fit_items.chunks(group_size) {
        let opened = open_all(group, opts.on_error)?;
        let mut crops = Vec::new();
        let mut crop_image = Vec::new();
        for (item, img) in opened {
            let index = g.kept.len() as u32;
            g.kept.push(item);
            for (_, c) in kensa_shared::tiling::crops(opts.tiling, &img) {
                crops.push(c);
                crop_image.push(index);
            }
        }
        let per_image = crops.len().div_ceil(group.len().max(1));
        let patches = extract_patches(backbone, pre, &crops, &|_| ())?;
        progress.advance(group.len());
        match opts.method {
            Method::PatchCore { .. } => {
                // Budget per crop so that the whole set stays within `max_patches`.
                let budget = (opts.max_patches / (fit_items.len() * per_image).max(1)).max(1);
                for (p, &image) in patches.iter().zip(&crop_image) {
                    g.dim = p.dim;
                    if p.rows() <= budget {
                        g.rows.extend_from_slice(&p.data);
                    } else {
                        for i in rand::seq::index::sample(&mut rng, p.rows(), budget) {
                            g.rows.extend_from_slice(p.row(i));
                        }
                    }
                    g.row_image.resize(g.rows.len() / p.dim, image);
                }
            }
            Method::Padim { .. } => {
                g.grids.extend(patches);
                g.grid_image.extend(crop_image);
            }
        }
    }
    progress.end();
    Ok(g)
}

/// The head of `opts.method` on what [`gather`] kept, and one head per fold fitted
/// without that fold's images.
fn fit_head(
    opts: &TrainOptions,
    g: Gathered,
    folds: usize,
    progress: &dyn Progress,
) -> Result<(Head, Vec<Head>)> {
    let fold_of = |image: u32| (image as usize % folds) as u16;
    Ok(match opts.method {
        Method::PatchCore { coreset } => {
            ensure!(coreset > 0.0 && coreset <= 1.0, Invalid, "coreset ratio {coreset} must be in (0, 1]");
            let total = g.rows.len() / g.dim.max(1);
            let k = ((total as f64 * coreset).ceil() as usize).min(total);
            let row_fold: Vec<u16> = g.row_image.iter().map(|&i| fold_of(i)).collect();
            progress.begin("coreset", k);
            let (pc, fold_banks) =
                PatchCore::fit_folds(g.rows, g.dim, coreset, opts.seed, &row_fold, folds, |i| {
                    if i % 64 == 0 {
                        progress.advance(64.min(i));
                    }
                });
            progress.end();
            (Head::PatchCore(pc), fold_banks.into_iter().map(Head::PatchCore).collect())
        }
        Method::Padim { channels } => {
            progress.begin("gaussians", folds + 1);
            let full = Head::Padim(Padim::fit(&g.grids, channels, opts.seed)?);
            progress.advance(1);
            let mut fold_heads = Vec::with_capacity(folds);
            for f in 0..folds as u16 {
                let rest: Vec<crate::embed::Patches> = g
                    .grids
                    .iter()
                    .zip(&g.grid_image)
                    .filter(|(_, i)| fold_of(**i) != f)
                    .map(|(p, _)| p.clone())
                    .collect();
                ensure!(
                    rest.len() >= 2,
                    Dataset,
                    "PaDiM's out-of-sample scores need at least 2 images outside each fold: give 3 or more good \
                     images"
                );
                fold_heads.push(Head::Padim(Padim::fit(&rest, channels, opts.seed)?));
                progress.advance(1);
            }
            progress.end();
            (full, fold_heads)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::Patches;

    #[test]
    fn padim_fold_heads_never_see_their_fold() {
        // Six one-cell "images"; image 5 is far from the rest. Fold f's Gaussians are
        // those of the images outside it, so their mean is the others' mean, and the odd
        // image scores far higher out of sample than in it.
        let values = [[0.0f32, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.0, 0.0], [6.0, 6.0]];
        let grids: Vec<Patches> =
            values.iter().map(|v| Patches { h: 1, w: 1, dim: 2, data: v.to_vec() }).collect();
        let g = Gathered {
            kept: Vec::new(),
            rows: Vec::new(),
            row_image: Vec::new(),
            dim: 2,
            grids: grids.clone(),
            grid_image: (0..6).collect(),
        };
        let opts = TrainOptions { method: Method::Padim { channels: 2 }, ..TrainOptions::default() };
        let (full, folds) = fit_head(&opts, g, 3, &crate::progress::Silent).unwrap();
        assert_eq!(folds.len(), 3);
        for (f, head) in folds.iter().enumerate() {
            let Head::Padim(p) = head else { panic!("PaDiM fold head") };
            let others: Vec<&[f32; 2]> =
                values.iter().enumerate().filter(|(i, _)| i % 3 != f).map(|(_, v)| v).collect();
            for c in 0..2 {
                let want = others.iter().map(|v| v[c]).sum::<f32>() / others.len() as f32;
                assert!((p.mean[c] - want).abs() < 1e-5, "fold {f} channel {c}: {} vs {want}", p.mean[c]);
            }
        }
        let odd = &grids[5];
        let (inside, outside) = (full.patch_scores(odd)[0], folds[5 % 3].patch_scores(odd)[0]);
        assert!(outside > 2.0 * inside, "{outside} out of sample vs {inside} in sample");
    }
}
