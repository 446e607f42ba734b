//! Evaluation: score a labelled test set and measure the model against ground truth.
//!
//! Pixel metrics are computed at the anomaly map's resolution (the model input, or a
//! tiled image at the tiles' scale): masks are resized to it by nearest neighbour, the
//! convention of the reference benchmarks this is compared with.

use std::collections::BTreeMap;

use image::{DynamicImage, GrayImage, imageops::FilterType};
use serde::Serialize;

use kensa_shared::runtime::Runner;
use rayon::prelude::*;

use crate::Progress;
use crate::dataset::{Dataset, Item, OnError, open_all, open_mask};
use crate::error::{Result, ensure};
use crate::metrics::{self, Confusion, PixelSample};
use crate::score::{Scored, Scorer};

/// FPR limit of AUPRO (MVTec AD protocol).
pub const AUPRO_FPR_LIMIT: f64 = 0.3;

/// Metrics of one defect type (its images against all good test images).
#[derive(Debug, Clone, Serialize)]
pub struct TypeMetrics {
    /// Images of this type.
    pub images: usize,
    /// Image AUROC of this type vs good.
    pub image_auroc: Option<f64>,
    /// Share of this type rejected at the operating threshold.
    pub recall: f64,
    /// Pixel AUROC over this type's masked images and the good images.
    pub pixel_auroc: Option<f64>,
    /// AUPRO@0.3 over the same pixels.
    pub aupro: Option<f64>,
}

/// Everything `kensa eval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Image-level AUROC.
    pub image_auroc: Option<f64>,
    /// Pixel-level AUROC over images with masks and good images.
    pub pixel_auroc: Option<f64>,
    /// Normalised area under the PRO curve up to FPR 0.3.
    pub aupro: Option<f64>,
    /// Best image F1 over all thresholds (an oracle figure: it looks at test labels).
    pub image_f1_max: Option<f64>,
    /// The threshold reaching `image_f1_max`.
    pub f1_max_threshold: Option<f32>,
    /// Operating threshold (the model's).
    pub threshold: f32,
    /// How the operating threshold was chosen.
    pub threshold_rule: String,
    /// Image F1 at the operating threshold.
    pub image_f1: f64,
    /// Confusion matrix at the operating threshold.
    pub confusion: Confusion,
    /// Per defect type.
    pub per_type: BTreeMap<String, TypeMetrics>,
    /// Good / defective test images.
    pub good_images: usize,
    /// Defective test images.
    pub defective_images: usize,
    /// Defective images without a mask (left out of pixel metrics).
    pub defects_without_mask: usize,
}

/// One scored test image with its ground truth.
#[derive(Debug)]
pub struct Case {
    /// The test item.
    pub item: Item,
    /// The image as loaded.
    pub image: DynamicImage,
    /// Mask at model resolution (for defects with masks).
    pub mask: Option<GrayImage>,
    /// Scores.
    pub scored: Scored,
}

/// Score every test image with the training-time pipeline and compute the metrics.
pub fn evaluate(
    scorer: &Scorer,
    ds: &Dataset,
    on_error: OnError,
    progress: &dyn Progress,
) -> Result<(Metrics, Vec<Case>)> {
    let rule = scorer.model.threshold.rule.to_string();
    let threshold = scorer.model.threshold.value;
    evaluate_with(ds, on_error, threshold, &rule, progress, |images, progress| scorer.score(images, progress))
}

/// Score every test image of a package, run by tract exactly as the box runs it.
pub fn evaluate_package(
    runner: &Runner,
    ds: &Dataset,
    on_error: OnError,
    progress: &dyn Progress,
) -> Result<(Metrics, Vec<Case>)> {
    let m = runner.manifest();
    evaluate_with(ds, on_error, m.threshold, &m.threshold_rule, progress, |images, progress| {
        images
            .par_iter()
            .map(|img| {
                let scored = runner.score(img)?;
                progress(1);
                Ok(scored)
            })
            .collect()
    })
}

/// Score every test image with `score` and compute the metrics at `threshold`.
pub fn evaluate_with(
    ds: &Dataset,
    on_error: OnError,
    threshold: f32,
    rule: &str,
    progress: &dyn Progress,
    score: impl Fn(&[DynamicImage], &(dyn Fn(usize) + Sync)) -> Result<Vec<Scored>>,
) -> Result<(Metrics, Vec<Case>)> {
    let loaded = open_all(&ds.test, on_error)?;
    ensure!(!loaded.is_empty(), Dataset, "the dataset has no test images");
    // Keep one copy of each decoded image: score the slice, then move the images into cases.
    let (items, images): (Vec<Item>, Vec<DynamicImage>) = loaded.into_iter().unzip();
    progress.begin("scoring", images.len());
    let scored = score(&images, &|n| progress.advance(n))?;
    progress.end();
    let mut cases = Vec::with_capacity(items.len());
    for ((item, image), scored) in items.into_iter().zip(images).zip(scored) {
        let mask = match &item.mask {
            Some(m) if item.is_defect() => {
                let full = open_mask(m, image.width(), image.height())?;
                let (w, h) = (scored.width as u32, scored.height as u32);
                Some(image::imageops::resize(&full, w, h, FilterType::Nearest))
            }
            _ => None,
        };
        cases.push(Case { item, image, mask, scored });
    }
    Ok((measure(&cases, threshold, rule), cases))
}

/// Metrics of scored cases at `threshold`.
pub fn measure(cases: &[Case], threshold: f32, rule: &str) -> Metrics {
    let scores: Vec<f32> = cases.iter().map(|c| c.scored.score).collect();
    let positive: Vec<bool> = cases.iter().map(|c| c.item.is_defect()).collect();
    let confusion = Confusion::at(&scores, &positive, threshold);
    let f1max = metrics::f1_max(&scores, &positive);

    // Pixel metrics over good images and defects that have masks; maps are `width` wide.
    let masks: Vec<Option<Vec<bool>>> = cases
        .iter()
        .map(|c| match (&c.mask, c.item.is_defect()) {
            (Some(m), _) => Some(m.pixels().map(|p| p[0] > 0).collect()),
            (None, false) => Some(vec![false; c.scored.map.len()]),
            (None, true) => None,
        })
        .collect();
    // (defect type or None for good, sample)
    let samples: Vec<(Option<&str>, PixelSample)> = cases
        .iter()
        .zip(&masks)
        .filter_map(|(c, m)| {
            let mask = m.as_deref()?;
            let kind = c.item.is_defect().then(|| c.item.kind());
            let (width, height) = (c.scored.width, c.scored.height);
            Some((kind, PixelSample { map: &c.scored.map, mask, width, height }))
        })
        .collect();
    let pixel_of = |keep: &dyn Fn(Option<&str>) -> bool| {
        let chosen: Vec<PixelSample> = samples.iter().filter(|(k, _)| keep(*k)).map(|(_, s)| *s).collect();
        metrics::pixel_metrics(&chosen, AUPRO_FPR_LIMIT)
    };
    let (pixel_auroc, aupro) = pixel_of(&|_| true);

    let mut per_type = BTreeMap::new();
    let good_scores: Vec<f32> =
        cases.iter().filter(|c| !c.item.is_defect()).map(|c| c.scored.score).collect();
    let kinds: std::collections::BTreeSet<&str> =
        cases.iter().filter(|c| c.item.is_defect()).map(|c| c.item.kind()).collect();
    for kind in kinds {
        let own: Vec<f32> = cases.iter().filter(|c| c.item.kind() == kind).map(|c| c.scored.score).collect();
        let s: Vec<f32> = good_scores.iter().chain(&own).copied().collect();
        let l: Vec<bool> = good_scores.iter().map(|_| false).chain(own.iter().map(|_| true)).collect();
        let (pixel_auroc, aupro) = pixel_of(&|k| k.is_none() || k == Some(kind));
        per_type.insert(
            kind.to_string(),
            TypeMetrics {
                images: own.len(),
                image_auroc: metrics::auroc(&s, &l),
                recall: own.iter().filter(|&&v| v >= threshold).count() as f64 / own.len() as f64,
                pixel_auroc,
                aupro,
            },
        );
    }
    Metrics {
        image_auroc: metrics::auroc(&scores, &positive),
        pixel_auroc,
        aupro,
        image_f1_max: f1max.map(|f| f.0),
        f1_max_threshold: f1max.map(|f| f.1),
        threshold,
        threshold_rule: rule.to_string(),
        image_f1: confusion.f1(),
        confusion,
        per_type,
        good_images: positive.iter().filter(|p| !**p).count(),
        defective_images: positive.iter().filter(|p| **p).count(),
        defects_without_mask: cases.iter().filter(|c| c.item.is_defect() && c.mask.is_none()).count(),
    }
}

/// What one threshold would have done: a row of the report's threshold table.
#[derive(Debug, Clone, Serialize)]
pub struct OperatingPoint {
    /// Where the threshold comes from.
    pub label: String,
    /// NG when score ≥ this.
    pub threshold: f32,
    /// Test images at this threshold.
    pub confusion: Confusion,
    /// Upper bound of the false-reject rate on the training evidence (out-of-sample good
    /// scores), at the confidence given.
    pub frr_bound: Option<f64>,
}

/// False-reject targets the threshold table shows.
pub const TABLE_TARGETS: [f64; 5] = [0.001, 0.005, 0.01, 0.02, 0.05];

/// The threshold table: the operating threshold, the test set's F1-max (an oracle), and
/// the false-reject rule at each of [`TABLE_TARGETS`] on the training evidence; strictest
/// first, one row per distinct threshold.
pub fn threshold_table(
    metrics: &Metrics,
    cases: &[Case],
    evidence: &crate::evidence::Evidence,
    confidence: f64,
) -> Vec<OperatingPoint> {
    use crate::train::threshold;
    let scores: Vec<f32> = cases.iter().map(|c| c.scored.score).collect();
    let positive: Vec<bool> = cases.iter().map(|c| c.item.is_defect()).collect();
    let mut rows: Vec<(String, f32)> = vec![("operating threshold".into(), metrics.threshold)];
    if let Some(t) = metrics.f1_max_threshold {
        rows.push(("F1-max on these test images (oracle)".into(), t));
    }
    if !evidence.good.is_empty() {
        for target in TABLE_TARGETS {
            let t = threshold::false_reject_rate(&evidence.good, target, confidence);
            rows.push((
                format!("false rejects ≤ {:.1} % ({:.0} % confidence)", 100.0 * target, 100.0 * confidence),
                t.value,
            ));
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.dedup_by(|b, a| {
        let same = a.1 == b.1;
        if same {
            a.0 = format!("{}; {}", a.0, b.0);
        }
        same
    });
    rows.into_iter()
        .map(|(label, t)| OperatingPoint {
            label,
            threshold: t,
            confusion: Confusion::at(&scores, &positive, t),
            frr_bound: (!evidence.good.is_empty())
                .then(|| threshold::false_rejects(&evidence.good, t, confidence).bound),
        })
        .collect()
}
