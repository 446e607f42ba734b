//! Evaluation metrics, pure functions over scores and labels.
//!
//! - [`auroc`]: area under the ROC curve with ties handled as scikit-learn does (all
//!   samples with equal score enter the curve at once, trapezoidal rule).
//! - [`aupro`]: area under the per-region-overlap curve up to a false-positive rate
//!   limit, divided by that limit (the MVTec AD protocol, limit 0.3). PRO(t) is the mean
//!   over ground-truth regions (8-connected) of the share of the region scored ≥ t; since
//!   that equals a sum over region pixels of `1 / (|region| · regions)`, the curve is a
//!   weighted ROC curve and both come from one sorted sweep.
//! - [`f1_max`], [`Confusion`]: image-level operating points.

use rayon::slice::ParallelSliceMut;
use serde::Serialize;

/// Indices of `scores` from highest to lowest (ties in any order; the sweep groups them).
/// Sorting `(score, index)` pairs in parallel keeps the millions of pixels of a test set
/// quick to rank.
fn order_desc(scores: &[f32]) -> Vec<u32> {
    assert!(scores.len() <= u32::MAX as usize, "too many samples to rank");
    let mut pairs: Vec<(f32, u32)> = scores.iter().zip(0u32..).map(|(&s, i)| (s, i)).collect();
    pairs.par_sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    pairs.into_iter().map(|(_, i)| i).collect()
}

/// Walk the thresholds from strict to lenient, calling `visit(fpr, tpr, threshold)` once
/// per distinct score (after the `(0, 0, +inf)` start). `weights` gives each positive its
/// share of the true-positive rate (uniform for ROC).
fn sweep_with(
    order: &[u32],
    scores: &[f32],
    positive: &[bool],
    weights: Option<&[f64]>,
    mut visit: impl FnMut(f64, f64, f32),
) {
    assert_eq!(scores.len(), positive.len(), "scores and labels differ in length");
    let n_neg = positive.iter().filter(|p| !**p).count() as f64;
    let total_w: f64 = match weights {
        Some(w) => positive.iter().zip(w).filter(|(p, _)| **p).map(|(_, w)| w).sum(),
        None => positive.iter().filter(|p| **p).count() as f64,
    };
    visit(0.0, 0.0, f32::INFINITY);
    let (mut fp, mut tp) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i] as usize];
        while i < order.len() && scores[order[i] as usize] == s {
            let k = order[i] as usize;
            if positive[k] {
                tp += weights.map_or(1.0, |w| w[k]);
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        visit(if n_neg > 0.0 { fp / n_neg } else { 0.0 }, if total_w > 0.0 { tp / total_w } else { 0.0 }, s);
    }
}

/// The sweep's points `(fpr, tpr, threshold)` from strict to lenient.
fn sweep(scores: &[f32], positive: &[bool], weights: Option<&[f64]>) -> Vec<(f64, f64, f32)> {
    let mut pts = Vec::new();
    sweep_with(&order_desc(scores), scores, positive, weights, |x, y, t| pts.push((x, y, t)));
    pts
}

/// Trapezoidal area under a curve fed point by point, up to `x = limit` (the last
/// segment interpolated), without storing the curve.
struct Area {
    limit: f64,
    last: Option<(f64, f64)>,
    sum: f64,
    done: bool,
}

impl Area {
    fn new(limit: f64) -> Self {
        Self { limit, last: None, sum: 0.0, done: false }
    }

    fn push(&mut self, x1: f64, y1: f64) {
        if self.done {
            return;
        }
        if let Some((x0, y0)) = self.last {
            if x0 >= self.limit {
                self.done = true;
                return;
            }
            if x1 > self.limit {
                let y = y0 + (y1 - y0) * (self.limit - x0) / (x1 - x0);
                self.sum += (self.limit - x0) * (y0 + y) / 2.0;
                self.done = true;
                return;
            }
            self.sum += (x1 - x0) * (y0 + y1) / 2.0;
        }
        self.last = Some((x1, y1));
    }
}

/// Area under `(x, y)` points up to `x = limit`.
fn area(points: &[(f64, f64, f32)], limit: f64) -> f64 {
    let mut a = Area::new(limit);
    for &(x, y, _) in points {
        a.push(x, y);
    }
    a.sum
}

/// Area under the ROC curve. `None` when only one class is present.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let pos = positive.iter().filter(|p| **p).count();
    if pos == 0 || pos == positive.len() {
        return None;
    }
    Some(area(&sweep(scores, positive, None), 1.0))
}

/// ROC curve points `(fpr, tpr, threshold)`, for plotting.
pub fn roc_curve(scores: &[f32], positive: &[bool]) -> Vec<(f64, f64, f32)> {
    sweep(scores, positive, None)
}

/// Label 8-connected foreground regions of a `width`×`height` mask; returns per-pixel
/// region ids (0 = background) and the number of regions.
pub fn label_regions(mask: &[bool], width: usize, height: usize) -> (Vec<u32>, u32) {
    assert_eq!(mask.len(), width * height);
    let mut labels = vec![0u32; mask.len()];
    let mut next = 0;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (x, y) = ((p % width) as isize, (p / width) as isize);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let q = ny as usize * width + nx as usize;
                    if mask[q] && labels[q] == 0 {
                        labels[q] = next;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (labels, next)
}

/// One image's anomaly map and ground truth, for pixel metrics.
#[derive(Debug, Clone, Copy)]
pub struct PixelSample<'a> {
    /// Anomaly map, row-major.
    pub map: &'a [f32],
    /// Ground-truth mask (true = defect), same layout; all false for good images.
    pub mask: &'a [bool],
    /// Map width.
    pub width: usize,
    /// Map height.
    pub height: usize,
}

/// Pixel-level AUROC and AUPRO (normalised, up to `fpr_limit`) over a set of images.
/// Returns `(None, None)` when there is no defect pixel or no good pixel.
pub fn pixel_metrics(samples: &[PixelSample<'_>], fpr_limit: f64) -> (Option<f64>, Option<f64>) {
    let total: usize = samples.iter().map(|s| s.map.len()).sum();
    let mut scores = Vec::with_capacity(total);
    let mut positive = Vec::with_capacity(total);
    let mut pro_weight = Vec::with_capacity(total);
    let mut region_sizes: Vec<Vec<usize>> = Vec::with_capacity(samples.len());
    let mut region_labels = Vec::with_capacity(samples.len());
    let mut regions_total = 0usize;
    for s in samples {
        assert_eq!(s.map.len(), s.mask.len(), "anomaly map and mask differ in size");
        let (labels, n) = label_regions(s.mask, s.width, s.height);
        let mut sizes = vec![0usize; n as usize + 1];
        for &l in &labels {
            sizes[l as usize] += 1;
        }
        regions_total += n as usize;
        region_sizes.push(sizes);
        region_labels.push(labels);
    }
    for ((s, labels), sizes) in samples.iter().zip(&region_labels).zip(&region_sizes) {
        scores.extend_from_slice(s.map);
        positive.extend_from_slice(s.mask);
        pro_weight.extend(
            labels
                .iter()
                .map(|&l| if l == 0 { 0.0 } else { 1.0 / (sizes[l as usize] as f64 * regions_total as f64) }),
        );
    }
    let pos = positive.iter().filter(|p| **p).count();
    if pos == 0 || pos == positive.len() {
        return (None, None);
    }
    // One ranking serves both curves.
    let order = order_desc(&scores);
    let mut roc = Area::new(1.0);
    sweep_with(&order, &scores, &positive, None, |x, y, _| roc.push(x, y));
    let mut pro = Area::new(fpr_limit);
    sweep_with(&order, &scores, &positive, Some(&pro_weight), |x, y, _| pro.push(x, y));
    (Some(roc.sum), Some(pro.sum / fpr_limit))
}

/// Counts at one threshold (NG = score ≥ threshold, positive = defective).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Defective parts rejected.
    pub true_ng: usize,
    /// Good parts rejected (false alarms).
    pub false_ng: usize,
    /// Good parts passed.
    pub true_ok: usize,
    /// Defective parts passed (escapes).
    pub false_ok: usize,
}

impl Confusion {
    /// Tally `scores` against `positive` at `threshold`.
    pub fn at(scores: &[f32], positive: &[bool], threshold: f32) -> Self {
        let mut c = Self::default();
        for (&s, &p) in scores.iter().zip(positive) {
            match (s >= threshold, p) {
                (true, true) => c.true_ng += 1,
                (true, false) => c.false_ng += 1,
                (false, false) => c.true_ok += 1,
                (false, true) => c.false_ok += 1,
            }
        }
        c
    }

    /// F1 of the defective class.
    pub fn f1(&self) -> f64 {
        let d = 2 * self.true_ng + self.false_ng + self.false_ok;
        if d == 0 { 0.0 } else { 2.0 * self.true_ng as f64 / d as f64 }
    }
}

/// The best F1 over all thresholds and the threshold reaching it (the lowest score of the
/// NG group, so `score ≥ threshold` reproduces it). `None` without defective samples.
pub fn f1_max(scores: &[f32], positive: &[bool]) -> Option<(f64, f32)> {
    let p = positive.iter().filter(|p| **p).count() as f64;
    if p == 0.0 {
        return None;
    }
    let pts = sweep(scores, positive, None);
    let n = (positive.len() as f64) - p;
    pts.iter()
        .skip(1)
        .map(|&(fpr, tpr, t)| {
            let (tp, fp) = (tpr * p, fpr * n);
            (2.0 * tp / (tp + fp + p), t)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_perfect_random_and_inverted_rankings() {
        let pos = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &pos), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &pos), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &pos), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn auroc_counts_ties_as_half() {
        // One positive tied with one negative, others separated: 3 of 4 pairs correct plus half.
        let s = [0.1, 0.5, 0.5, 0.9];
        let p = [false, false, true, true];
        assert!((auroc(&s, &p).unwrap() - 0.875).abs() < 1e-12);
    }

    #[test]
    fn regions_are_eight_connected() {
        #[rustfmt::skip]
        let m = [
            1, 0, 0, 0,
            0, 1, 0, 1,
            0, 0, 0, 1,
        ].map(|v| v == 1);
        let (labels, n) = label_regions(&m, 4, 3);
        assert_eq!(n, 2);
        assert_eq!(labels[0], labels[5]);
        assert_ne!(labels[0], labels[7]);
    }

    #[test]
    fn aupro_weighs_regions_equally_whatever_their_size() {
        // A 40-px region fully found (score 1) and a 1-px region scored like background (0).
        // PRO is 0.5 at FPR 0 and rises linearly to 1 at FPR 1 (the all-pixels threshold), so
        // the normalised area to 0.3 is (0.5 + 0.65) / 2 = 0.575; pixel-weighting would give ~0.99.
        let w = 10;
        let mut mask = vec![false; w * w];
        let mut map = vec![0.0f32; w * w];
        for i in 5 * w..9 * w {
            mask[i] = true;
            map[i] = 1.0;
        }
        mask[9] = true;
        let s = PixelSample { map: &map, mask: &mask, width: w, height: w };
        let (_, aupro) = pixel_metrics(&[s], 0.3);
        assert!((aupro.unwrap() - 0.575).abs() < 1e-9, "{aupro:?}");
    }

    #[test]
    fn f1_max_picks_the_separating_threshold() {
        let s = [0.1, 0.2, 0.3, 0.7, 0.8];
        let p = [false, false, false, true, true];
        let (f1, t) = f1_max(&s, &p).unwrap();
        assert_eq!(f1, 1.0);
        assert_eq!(t, 0.7);
        assert_eq!(Confusion::at(&s, &p, t), Confusion { true_ng: 2, false_ng: 0, true_ok: 3, false_ok: 0 });
    }
}
