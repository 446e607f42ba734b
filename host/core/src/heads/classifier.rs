//! The OK/NG head: one linear score per patch, pooled by the mean of the highest ones.
//!
//! `z_i = w·x_i + b` for every patch embedding `x_i`; the image logit is the mean of the
//! top `k` patch scores, the same pooling the anomaly map gets, so a small defect is not
//! averaged away by a large clean surface. Because the head is linear per patch, the grid
//! of `z_i` *is* the class-activation map (exact CAM, no gradients needed), and the
//! exported graph runs it as one MatMul into the anomaly-map path.
//!
//! Training: weighted binary cross-entropy on the image logit, full batch, Adam, L2, with
//! early stopping on the validation loss. Class imbalance is handled by weighting: each
//! class carries half of the total weight whatever its count. Duplicating the rare class
//! would give the same expected gradient at more cost; new *views* of it come from
//! augmentation instead, drawn from the same distribution for both classes so that
//! "augmented-looking" never predicts NG.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::embed::Patches;

/// A fitted head, in raw embedding units (any standardisation used in training is
/// folded into `weights` and `bias`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classifier {
    /// One weight per embedding value.
    pub weights: Vec<f32>,
    /// Added to every patch score.
    pub bias: f32,
}

impl Classifier {
    /// Patch-score grid (the class-activation map) of one image's patches.
    pub fn score(&self, p: &Patches) -> Vec<f32> {
        assert_eq!(p.dim, self.weights.len(), "embedding size differs from the head's");
        p.data.chunks_exact(p.dim).map(|x| dot(x, &self.weights) + self.bias).collect()
    }
}

/// How the classes are weighted in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weighting {
    /// Each class carries half the total weight.
    Balanced,
    /// Every image counts the same (the majority class dominates).
    None,
}

/// Optimiser settings.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// Patches averaged into the image logit.
    pub top_k: usize,
    /// Class weighting.
    pub weighting: Weighting,
    /// Adam step size.
    pub learning_rate: f32,
    /// L2 penalty on the weights (standardised units).
    pub l2: f32,
    /// Most epochs.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            top_k: 1,
            weighting: Weighting::Balanced,
            learning_rate: 0.03,
            l2: 1e-3,
            max_epochs: 500,
            patience: 25,
        }
    }
}

/// Loss and accuracy after one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// Weighted cross-entropy on the training views.
    pub train_loss: f32,
    /// Share of training views on the right side of logit 0.
    pub train_accuracy: f32,
    /// Weighted cross-entropy on the validation images (NaN without any).
    pub val_loss: f32,
    /// Share of validation images on the right side of logit 0.
    pub val_accuracy: f32,
}

/// One labelled image: its patches and whether it is NG.
#[derive(Debug, Clone)]
pub struct Example {
    /// Patch embeddings.
    pub patches: Patches,
    /// True for NG.
    pub ng: bool,
}

/// Per-dimension mean and standard deviation of the training patches.
fn standardiser(train: &[Example]) -> (Vec<f32>, Vec<f32>) {
    let dim = train[0].patches.dim;
    let mut sum = vec![0.0f64; dim];
    let mut sq = vec![0.0f64; dim];
    let mut n = 0usize;
    for e in train {
        for x in e.patches.data.chunks_exact(dim) {
            for c in 0..dim {
                sum[c] += x[c] as f64;
                sq[c] += (x[c] as f64).powi(2);
            }
            n += 1;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let std = sq.iter().zip(&mean).map(|(q, m)| ((q / n as f64 - m * m).max(0.0).sqrt().max(1e-6)) as f32);
    (mean.iter().map(|&m| m as f32).collect(), std.collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(s: f32) -> f32 {
    1.0 / (1.0 + (-s).exp())
}

/// `−log σ(s)` for NG, `−log(1 − σ(s))` for OK, without overflow.
fn cross_entropy(s: f32, ng: bool) -> f32 {
    let m = if ng { -s } else { s };
    m.max(0.0) + (-m.abs()).exp().ln_1p()
}

/// Image logit and the indices of the patches it averages (standardised patches).
fn forward(x: &[f32], dim: usize, w: &[f32], b: f32, k: usize) -> (f32, Vec<usize>) {
    let z: Vec<f32> = x.chunks_exact(dim).map(|r| dot(r, w) + b).collect();
    let k = k.clamp(1, z.len());
    let mut idx: Vec<usize> = (0..z.len()).collect();
    idx.select_nth_unstable_by(k - 1, |&i, &j| z[j].total_cmp(&z[i]));
    idx.truncate(k);
    let s = idx.iter().map(|&i| z[i]).sum::<f32>() / k as f32;
    (s, idx)
}

/// Class weights so each class carries half the total (or all 1).
fn class_weights(examples: &[Example], weighting: Weighting) -> (f32, f32) {
    let ng = examples.iter().filter(|e| e.ng).count().max(1) as f32;
    let ok = (examples.len() as f32 - ng).max(1.0);
    match weighting {
        Weighting::Balanced => {
            let n = examples.len() as f32;
            (n / (2.0 * ok), n / (2.0 * ng))
        }
        Weighting::None => (1.0, 1.0),
    }
}

/// Loss, accuracy and (optionally) the gradient over `examples` (standardised).
fn pass(
    examples: &[Example],
    w: &[f32],
    b: f32,
    k: usize,
    cw: (f32, f32),
    grad: bool,
) -> (f32, f32, Vec<f32>, f32) {
    let dim = w.len();
    // Fixed chunks summed in order: the same sums (to the last bit) on any core count,
    // so a seed reproduces a model exactly.
    let chunks: Vec<(f64, f64, usize, Vec<f32>, f32)> = examples
        .par_chunks(16)
        .map(|chunk| {
            let (mut loss, mut weight, mut right) = (0.0f64, 0.0f64, 0usize);
            let (mut gw, mut gb) = (vec![0.0f32; if grad { dim } else { 0 }], 0.0f32);
            for e in chunk {
                let (s, top) = forward(&e.patches.data, dim, w, b, k);
                let c = if e.ng { cw.1 } else { cw.0 };
                let g = c * (sigmoid(s) - f32::from(u8::from(e.ng)));
                if grad {
                    let per = g / top.len() as f32;
                    for &i in &top {
                        for (a, x) in gw.iter_mut().zip(e.patches.row(i)) {
                            *a += per * x;
                        }
                    }
                }
                loss += (c * cross_entropy(s, e.ng)) as f64;
                weight += c as f64;
                right += usize::from((s >= 0.0) == e.ng);
                gb += g;
            }
            (loss, weight, right, gw, gb)
        })
        .collect();
    let (mut loss, mut weight, mut right) = (0.0f64, 0.0f64, 0usize);
    let (mut gw, mut gb) = (vec![0.0f32; if grad { dim } else { 0 }], 0.0f32);
    for (l, wt, r, g, b) in chunks {
        loss += l;
        weight += wt;
        right += r;
        gb += b;
        gw.iter_mut().zip(&g).for_each(|(a, v)| *a += v);
    }
    let norm = weight.max(1e-12) as f32;
    (
        (loss / weight.max(1e-12)) as f32,
        right as f32 / examples.len().max(1) as f32,
        gw.into_iter().map(|v| v / norm).collect(),
        gb / norm,
    )
}

fn standardise(examples: &mut [Example], mean: &[f32], std: &[f32]) {
    for e in examples {
        let dim = e.patches.dim;
        for x in e.patches.data.chunks_exact_mut(dim) {
            for c in 0..dim {
                x[c] = (x[c] - mean[c]) / std[c];
            }
        }
    }
}

/// Fit on `train`, stopping early on `val` (or after `max_epochs` without one). Takes the
/// examples by value: they are standardised in place.
pub fn fit(mut train: Vec<Example>, mut val: Vec<Example>, opts: &FitOptions) -> (Classifier, Vec<Epoch>) {
    assert!(!train.is_empty(), "no training examples");
    let (mean, std) = standardiser(&train);
    standardise(&mut train, &mean, &std);
    standardise(&mut val, &mean, &std);
    let dim = mean.len();
    let cw = class_weights(&train, opts.weighting);
    let (mut w, mut b) = (vec![0.0f32; dim], 0.0f32);
    let (mut m, mut v) = (vec![0.0f32; dim + 1], vec![0.0f32; dim + 1]);
    let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut best = (f32::INFINITY, w.clone(), b);
    let mut since_best = 0;
    let mut curves = Vec::new();
    for epoch in 1..=opts.max_epochs {
        let (train_loss, train_accuracy, mut gw, gb) = pass(&train, &w, b, opts.top_k, cw, true);
        for (g, wi) in gw.iter_mut().zip(&w) {
            *g += opts.l2 * wi;
        }
        let t = epoch as i32;
        for (j, g) in gw.iter().chain([&gb]).enumerate() {
            m[j] = beta1 * m[j] + (1.0 - beta1) * g;
            v[j] = beta2 * v[j] + (1.0 - beta2) * g * g;
            let step = opts.learning_rate * (m[j] / (1.0 - beta1.powi(t)))
                / ((v[j] / (1.0 - beta2.powi(t))).sqrt() + eps);
            if j < dim { w[j] -= step } else { b -= step }
        }
        let (val_loss, val_accuracy) = if val.is_empty() {
            (f32::NAN, f32::NAN)
        } else {
            let (l, a, ..) = pass(&val, &w, b, opts.top_k, cw, false);
            (l, a)
        };
        curves.push(Epoch { train_loss, train_accuracy, val_loss, val_accuracy });
        let watched = if val.is_empty() { train_loss } else { val_loss };
        if watched < best.0 {
            best = (watched, w.clone(), b);
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= opts.patience {
                break;
            }
        }
    }
    let (_, w, b) = best;
    // Fold the standardisation: w·(x − μ)/σ + b = (w/σ)·x + (b − Σ w μ/σ).
    let weights: Vec<f32> = w.iter().zip(&std).map(|(wi, s)| wi / s).collect();
    let bias = b - weights.iter().zip(&mean).map(|(wi, mu)| wi * mu).sum::<f32>();
    (Classifier { weights, bias }, curves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// One-patch examples: OK around (0, 0), NG around (2, 2), unit spread.
    fn toy(n_ok: usize, n_ng: usize, seed: u64) -> Vec<Example> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = move || {
            // Box–Muller.
            let (u, v): (f32, f32) = (rng.random_range(1e-6..1.0), rng.random_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        };
        (0..n_ok + n_ng)
            .map(|i| {
                let ng = i >= n_ok;
                let c = if ng { 2.0 } else { 0.0 };
                let data = vec![c + normal(), c + normal()];
                Example { patches: Patches { h: 1, w: 1, dim: 2, data }, ng }
            })
            .collect()
    }

    fn recall(c: &Classifier, set: &[Example]) -> f32 {
        let ng: Vec<&Example> = set.iter().filter(|e| e.ng).collect();
        ng.iter().filter(|e| c.score(&e.patches)[0] >= 0.0).count() as f32 / ng.len() as f32
    }

    #[test]
    fn balanced_weights_move_the_boundary_towards_the_majority_class() {
        let train = toy(950, 50, 1);
        let test = toy(950, 50, 2);
        let opts = FitOptions { max_epochs: 400, patience: 400, learning_rate: 0.05, ..Default::default() };
        let (plain, _) = fit(train.clone(), Vec::new(), &FitOptions { weighting: Weighting::None, ..opts });
        let (balanced, _) = fit(train, Vec::new(), &opts);
        // The same direction, a lower bar: more NG caught, at the cost of more OK flagged.
        let (rp, rb) = (recall(&plain, &test), recall(&balanced, &test));
        assert!(rb > rp + 0.2, "recall unweighted {rp:.2}, balanced {rb:.2}");
        let midpoint = Patches { h: 1, w: 1, dim: 2, data: vec![1.0, 1.0] };
        assert!(plain.score(&midpoint)[0] < 0.0, "unweighted: the midpoint is OK");
        assert!(balanced.score(&midpoint)[0] > -0.5, "balanced: the boundary is near the midpoint");
    }

    #[test]
    fn the_image_logit_is_the_mean_of_the_top_patches_and_the_fold_is_exact() {
        // NG images carry one bright patch among dull ones: only top-1 pooling can see it.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let make = |ng: bool, rng: &mut ChaCha8Rng| {
            let mut data: Vec<f32> = (0..16).map(|_| rng.random_range(0.0..1.0)).collect();
            if ng {
                data[rng.random_range(0..16)] += 3.0;
            }
            Example { patches: Patches { h: 4, w: 4, dim: 1, data }, ng }
        };
        let train: Vec<Example> = (0..200).map(|i| make(i % 4 == 0, &mut rng)).collect();
        let val: Vec<Example> = (0..80).map(|i| make(i % 4 == 0, &mut rng)).collect();
        let (c, curves) = fit(train, val.clone(), &FitOptions::default());
        assert!(curves.len() >= 2 && curves.len() <= FitOptions::default().max_epochs);
        assert!(curves.last().unwrap().val_accuracy > 0.95, "{:?}", curves.last());
        // Scores in raw units reproduce the pooled logit's decisions.
        let right = val
            .iter()
            .filter(|e| {
                let z = c.score(&e.patches);
                (z.iter().copied().fold(f32::MIN, f32::max) >= 0.0) == e.ng
            })
            .count();
        assert!(right as f32 / val.len() as f32 > 0.95);
    }

    #[test]
    fn cross_entropy_is_stable_for_large_logits() {
        assert!((cross_entropy(0.0, true) - std::f32::consts::LN_2).abs() < 1e-6);
        assert!(cross_entropy(1e4, true) < 1e-6);
        assert!((cross_entropy(1e4, false) - 1e4).abs() < 1.0);
    }
}
