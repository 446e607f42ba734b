//! Learning from labelled defects: `kensa train --supervised` (and `--combined`).
//!
//! Good training images and the training share of defect images
//! ([`Dataset::split_labelled`]) become augmented views ([`super::augment`]); the backbone
//! embeds them like the anomaly models do; [`classifier`] fits a linear patch head with
//! class weights and early stopping on the validation images; the threshold is the best
//! F1 on those validation images. `--combined` also fits the anomaly head on the good
//! images and joins both by the rule documented on [`Combined`].

use std::time::Instant;

use image::DynamicImage;
use kensa_shared::preprocess::{Preprocess, Resize};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use rayon::prelude::*;

use super::augment::Augment;
use super::threshold::{self, Evidence};
use super::{TrainOptions, train};
use crate::Progress;
use crate::backbone::Backbone;
use crate::dataset::{Dataset, Item, open_all};
use crate::embed::Patches;
use crate::error::{Result, ensure};
use crate::heads::classifier::{self, Example, FitOptions};
use crate::heads::{Affine, Combined, Head, mix};
use crate::model::{Threshold, ThresholdRule, TrainedModel, TrainingSummary};
use crate::score::{BATCH, extract_patches};
use crate::{map, metrics};

/// Fewest defective training images a supervised head is fitted on. Below it the head
/// learns the few defects by heart (validation accuracy near chance, test AUROC ≈ 0.5 in
/// measurements with 4); an anomaly model needs none.
pub const MIN_TRAINING_DEFECTS: usize = 20;

/// Images decoded and augmented at a time.
const GROUP: usize = 16;

/// What `train_supervised` needs besides the data.
#[derive(Debug, Clone)]
pub struct SupervisedOptions {
    /// Input size, colour, backbone, features, seed, pooling share; the anomaly head's
    /// settings for `combined`.
    pub base: TrainOptions,
    /// Augmented views per defective training image (good images get one each).
    pub ng_views: usize,
    /// Ranges of the augmentation.
    pub augment: Augment,
    /// Optimiser (its `top_k` is set from the pooling share).
    pub fit: FitOptions,
    /// Also fit the anomaly head and combine.
    pub combined: bool,
    /// Fewest defective training images accepted ([`MIN_TRAINING_DEFECTS`]).
    pub min_defects: usize,
}

impl Default for SupervisedOptions {
    fn default() -> Self {
        Self {
            base: TrainOptions::default(),
            ng_views: 6,
            augment: Augment::default(),
            fit: FitOptions::default(),
            combined: false,
            min_defects: MIN_TRAINING_DEFECTS,
        }
    }
}

/// The backbone and pixel pipeline views go through.
struct Embedder<'a> {
    backbone: &'a Backbone,
    pre: &'a Preprocess,
    opts: &'a TrainOptions,
    progress: &'a dyn Progress,
}

/// Embedded views of `items`: `views(i)` augmented views of item `i` (0 = the original
/// image), each seeded by the item's position so the set does not depend on grouping.
fn embed_views(
    items: &[Item],
    views: impl Fn(&Item) -> usize,
    augment: &Augment,
    seed: u64,
    e: &Embedder,
    what: &str,
) -> Result<Vec<Example>> {
    e.progress.begin(what, items.len());
    let mut out = Vec::new();
    for (g, group) in items.chunks(GROUP).enumerate() {
        let mut images: Vec<DynamicImage> = Vec::new();
        let mut labels = Vec::new();
        for (j, (item, img)) in open_all(group, e.opts.on_error)?.into_iter().enumerate() {
            let n = views(&item);
            if n == 0 {
                images.push(img);
                labels.push(item.is_defect());
                continue;
            }
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ ((g * GROUP + j) as u64).wrapping_mul(0x9E37_79B9));
            for _ in 0..n {
                let t = augment.draw(img.width(), img.height(), &mut rng);
                images.push(t.apply(&img));
                labels.push(item.is_defect());
            }
        }
        let patches = extract_patches(e.backbone, e.pre, &images, &|_| ())?;
        out.extend(patches.into_iter().zip(labels).map(|(patches, ng)| Example { patches, ng }));
        e.progress.advance(group.len());
    }
    e.progress.end();
    Ok(out)
}

/// Mean and standard deviation of `v`.
fn mean_std(v: &[f32]) -> (f32, f32) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean as f32, var.sqrt() as f32)
}

/// Fit an OK/NG model on `ds` after [`Dataset::split_labelled`].
pub fn train_supervised(
    ds: &Dataset,
    dataset_name: &str,
    opts: &SupervisedOptions,
    progress: &dyn Progress,
) -> Result<TrainedModel> {
    let started = Instant::now();
    let base = &opts.base;
    ensure!(base.tiling.is_none(), Invalid, "supervised training works on whole images; leave out --tile");
    ensure!(
        !ds.train_defects.is_empty(),
        Dataset,
        "supervised training needs defective images to learn from; the labelled split found none among \
         {} test images",
        ds.test.len()
    );
    let defects = ds.train_defects.len()
        + ds.validation.iter().filter(|i| i.is_defect()).count()
        + ds.test.iter().filter(|i| i.is_defect()).count();
    let min = opts.min_defects.max(1);
    ensure!(
        ds.train_defects.len() >= min,
        Dataset,
        "supervised training needs at least {min} defective training images; the labelled \
         split (2 of every 5 defects train, 1 validates, 2 test) gives {} of the {defects} defective images \
         to training, so about {} defective images are needed in all. With fewer, train an anomaly model \
         from good images (leave out --supervised)",
        ds.train_defects.len(),
        min * 5 / 2
    );
    let val_good = ds.validation.iter().filter(|i| !i.is_defect()).count();
    ensure!(
        val_good > 0 && val_good < ds.validation.len(),
        Dataset,
        "validation needs good and defective images; it has {val_good} good of {}",
        ds.validation.len()
    );
    let pre =
        Preprocess { width: base.size, height: base.size, resize: Resize::Stretch, colour: base.colour };
    let backbone =
        Backbone::load(&base.backbone, &base.features, base.size as usize, base.size as usize, BATCH)?;

    let mut train_items = ds.train.clone();
    train_items.extend(ds.train_defects.iter().cloned());
    let views = |i: &Item| if i.is_defect() { opts.ng_views.max(1) } else { 1 };
    let e = Embedder { backbone: &backbone, pre: &pre, opts: base, progress };
    let train_set = embed_views(&train_items, views, &opts.augment, base.seed, &e, "views")?;
    let val_set = embed_views(&ds.validation, |_| 0, &opts.augment, 0, &e, "validation")?;
    let cells = train_set[0].patches.rows();
    let fit_opts = FitOptions { top_k: map::top_count(base.score_top_share, cells), ..opts.fit };
    tracing::info!(views = train_set.len(), seconds = started.elapsed().as_secs_f64(), "views embedded");
    let (classifier, curves) = classifier::fit(train_set, val_set.clone(), &fit_opts);

    let mut model = TrainedModel {
        backbone: base.backbone.clone(),
        features: base.features.clone(),
        preprocess: pre,
        tiling: None,
        score_top_share: base.score_top_share,
        head: Head::Supervised(classifier.clone()),
        threshold: Threshold { value: f32::INFINITY, rule: ThresholdRule::Manual },
        training: TrainingSummary {
            dataset: dataset_name.to_string(),
            images: ds.train.len(),
            defect_images: ds.train_defects.len(),
            labelled_split: true,
            seed: base.seed,
            curves,
            ..TrainingSummary::default()
        },
    };
    let val_patches: Vec<&Patches> = val_set.iter().map(|e| &e.patches).collect();
    let positive: Vec<bool> = val_set.iter().map(|e| e.ng).collect();
    let image_scores =
        |m: &TrainedModel| -> Vec<f32> { val_patches.par_iter().map(|p| m.score_patches(p).score).collect() };
    if opts.combined {
        let anomaly = train(ds, &[], dataset_name, base, progress)?;
        let (head, weight) = combine(&anomaly, &model, &classifier, &val_patches, &positive, &pre, base);
        tracing::info!(weight, "combined head");
        model.head = head;
        model.training.coreset_ratio = anomaly.training.coreset_ratio;
    }
    let scores = image_scores(&model);
    let mut evidence = Evidence::default();
    for (s, ng) in scores.iter().zip(&positive) {
        if *ng { evidence.defective.push(*s) } else { evidence.good.push(*s) }
    }
    model.threshold = threshold::choose(&evidence, base.frr, base.confidence);
    model.training.warnings = threshold::warnings(&model.threshold, &evidence, base.frr, base.confidence);
    if let Some(last) = model.training.curves.last()
        && last.val_accuracy < 0.8
    {
        model.training.warnings.push(format!(
            "the supervised head reaches only {:.2} accuracy on validation images: it has not learnt to tell \
             OK from NG; check the labels or add defective images",
            last.val_accuracy
        ));
    }
    model.training.evidence = evidence;
    model.training.seconds = started.elapsed().as_secs_f64();
    Ok(model)
}

/// The combined head of `anomaly` and the classifier of `supervised` (see [`Combined`]):
/// both standardised on the good validation images, weighted by the share that ranks
/// the validation images best. Returns the head and that share.
fn combine(
    anomaly: &TrainedModel,
    supervised: &TrainedModel,
    classifier: &classifier::Classifier,
    val_patches: &[&Patches],
    positive: &[bool],
    pre: &Preprocess,
    base: &TrainOptions,
) -> (Head, f32) {
    let good_scores = |m: &TrainedModel| -> (f32, f32) {
        let s: Vec<f32> = val_patches.par_iter().map(|p| m.score_patches(p).score).collect();
        let good: Vec<f32> = s.iter().zip(positive).filter(|(_, p)| !**p).map(|(v, _)| *v).collect();
        mean_std(&good)
    };
    let (am, asd) = good_scores(anomaly);
    let (cm, csd) = good_scores(supervised);
    let (a_std, c_std) = (Affine::standardising(am, asd), Affine::standardising(cm, csd));
    // Patch grids of both heads once; each weight is then only maps and pooling.
    let grids: Vec<(Vec<f32>, Vec<f32>)> =
        val_patches.par_iter().map(|p| (anomaly.head.patch_scores(p), classifier.score(p))).collect();
    let (gh, gw) = (val_patches[0].h, val_patches[0].w);
    let (h, wd) = (pre.height as usize, pre.width as usize);
    let mut best = (f64::NEG_INFINITY, 0.5f32);
    for step in 0..=10 {
        let w = step as f32 / 10.0;
        let scores: Vec<f32> = grids
            .par_iter()
            .map(|(a, s)| {
                let z = mix(a, s, a_std.times(w), c_std.times(1.0 - w));
                map::image_score(&map::anomaly_map(&z, gh, gw, h, wd), wd, base.score_top_share)
            })
            .collect();
        let auroc = metrics::auroc(&scores, positive).unwrap_or(0.0);
        tracing::info!(weight = w, auroc, "combined rule on validation");
        let nearer = (w - 0.5).abs() < (best.1 - 0.5).abs();
        if auroc > best.0 + 1e-9 || ((auroc - best.0).abs() <= 1e-9 && nearer) {
            best = (auroc, w);
        }
    }
    let w = best.1;
    let head = Head::Combined(Combined {
        anomaly: Box::new(anomaly.head.clone()),
        classifier: classifier.clone(),
        anomaly_scale: a_std.times(w),
        classifier_scale: c_std.times(1.0 - w),
        anomaly_weight: w,
    });
    (head, w)
}
