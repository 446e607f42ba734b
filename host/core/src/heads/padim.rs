//! PaDiM: one Gaussian per patch position over a random subset of channels; a test
//! patch scores its Mahalanobis distance to its position's Gaussian.
//!
//! Covariances are regularised (`Σ + εI`) and inverted through a Cholesky factorisation;
//! the precision matrices are stored so scoring (and the exported graph) is one batched
//! quadratic form per position.

use faer::{Mat, Side, linalg::solvers::DenseSolveCore};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::embed::Patches;

/// Covariance regulariser added to the diagonal.
pub const EPSILON: f64 = 0.01;

/// A fitted PaDiM model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Padim {
    /// Channels of the embedding used, in order.
    pub channels: Vec<usize>,
    /// Grid height and width the Gaussians were fitted on.
    pub grid: (usize, usize),
    /// Per-position means, `[positions, d]`.
    pub mean: Vec<f32>,
    /// Per-position precision matrices, `[positions, d, d]`.
    pub precision: Vec<f32>,
}

impl Padim {
    /// Fit on training patches, using `d` randomly chosen channels.
    pub fn fit(train: &[Patches], d: usize, seed: u64) -> crate::Result<Self> {
        crate::error::ensure!(
            train.len() >= 2,
            Invalid,
            "PaDiM needs at least 2 training images, got {}",
            train.len()
        );
        let (h, w, dim) = (train[0].h, train[0].w, train[0].dim);
        let mut channels: Vec<usize> = (0..dim).collect();
        channels.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        channels.truncate(d.min(dim));
        channels.sort_unstable();
        let d = channels.len();
        let n = train.len();
        let positions = h * w;
        let per_pos: Vec<(Vec<f32>, Vec<f32>)> = (0..positions)
            .into_par_iter()
            .map(|p| {
                let x = Mat::<f64>::from_fn(n, d, |i, j| train[i].data[p * dim + channels[j]] as f64);
                let mu: Vec<f64> =
                    (0..d).map(|j| (0..n).map(|i| x[(i, j)]).sum::<f64>() / n as f64).collect();
                let xc = Mat::<f64>::from_fn(n, d, |i, j| x[(i, j)] - mu[j]);
                let mut cov = xc.transpose() * &xc;
                for a in 0..d {
                    for b in 0..d {
                        cov[(a, b)] /= (n - 1) as f64;
                    }
                    cov[(a, a)] += EPSILON;
                }
                let prec = cov.llt(Side::Lower).expect("Σ + εI is positive definite").inverse();
                let prec: Vec<f32> = (0..d * d).map(|k| prec[(k / d, k % d)] as f32).collect();
                (mu.into_iter().map(|v| v as f32).collect(), prec)
            })
            .collect();
        let mut mean = Vec::with_capacity(positions * d);
        let mut precision = Vec::with_capacity(positions * d * d);
        for (m, p) in per_pos {
            mean.extend(m);
            precision.extend(p);
        }
        Ok(Self { channels, grid: (h, w), mean, precision })
    }

    /// Mahalanobis distance of each patch to its position's Gaussian.
    pub fn score(&self, p: &Patches) -> Vec<f32> {
        assert_eq!((p.h, p.w), self.grid, "patch grid differs from the fitted one");
        let d = self.channels.len();
        (0..p.rows())
            .map(|pos| {
                let row = p.row(pos);
                let diff: Vec<f32> =
                    self.channels.iter().enumerate().map(|(j, &c)| row[c] - self.mean[pos * d + j]).collect();
                let prec = &self.precision[pos * d * d..(pos + 1) * d * d];
                let mut q = 0.0f32;
                for (a, da) in diff.iter().enumerate() {
                    let r = &prec[a * d..(a + 1) * d];
                    q += da * r.iter().zip(&diff).map(|(p, db)| p * db).sum::<f32>();
                }
                q.max(0.0).sqrt()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn mahalanobis_scales_with_the_learned_spread() {
        // One position, two channels: channel 0 varies with σ≈1, channel 1 with σ≈0.1.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let train: Vec<Patches> = (0..400)
            .map(|_| Patches {
                h: 1,
                w: 1,
                dim: 2,
                data: vec![rng.random_range(-1.732f32..1.732), rng.random_range(-0.1732f32..0.1732)],
            })
            .collect();
        let m = Padim::fit(&train, 2, 0).unwrap();
        let probe = |a: f32, b: f32| m.score(&Patches { h: 1, w: 1, dim: 2, data: vec![a, b] })[0];
        // A 0.5 step along the tight axis is far more anomalous than along the loose one.
        assert!(probe(0.0, 0.5) > 3.0 * probe(0.5, 0.0), "{} vs {}", probe(0.0, 0.5), probe(0.5, 0.0));
        assert!(probe(0.0, 0.0) < 0.2);
    }
}
