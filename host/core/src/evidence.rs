//! The evidence behind a threshold, and what it can show: out-of-sample good scores,
//! defect scores, and the exact binomial bound on the false-reject rate they allow.
//!
//! If k of n out-of-sample good scores reach a threshold, the false-reject rate's upper
//! bound is the one-sided Clopper–Pearson limit for k of n: it needs no assumption about
//! the score distribution, only that good parts on the line are like those trained on.

use serde::{Deserialize, Serialize};

/// Scores the threshold was chosen on: every good training image scored by a model that
/// did not see it, and defective validation images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Out-of-sample scores of good images.
    pub good: Vec<f32>,
    /// Scores of defective validation images.
    pub defective: Vec<f32>,
}

/// What a threshold means on the good evidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FalseRejects {
    /// Good scores it was measured on.
    pub good: usize,
    /// Of those, how many reach the threshold (would be rejected).
    pub rejected: usize,
    /// Upper bound of the false-reject rate at the confidence asked.
    pub bound: f64,
}

/// The false-reject evidence for threshold `t` (NG when score ≥ t) on `good` scores.
pub fn false_rejects(good: &[f32], t: f32, confidence: f64) -> FalseRejects {
    let rejected = good.iter().filter(|&&s| s >= t).count();
    FalseRejects { good: good.len(), rejected, bound: upper_bound(rejected, good.len(), confidence) }
}

/// Clopper–Pearson upper bound of a binomial rate seen as `k` of `n`: the largest rate
/// under which seeing `k` or fewer still has probability `1 − confidence`.
pub fn upper_bound(k: usize, n: usize, confidence: f64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    let alpha = 1.0 - confidence;
    // P(X ≤ k) falls as p grows: bisect for P(X ≤ k | n, p) = α.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if binomial_cdf(k, n, mid) > alpha { lo = mid } else { hi = mid }
    }
    hi
}

/// P(X ≤ k) for X ~ Binomial(n, p), summed in log space so large `n` cannot underflow.
fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_term = n as f64 * lq; // log P(X = 0)
    let mut terms = vec![log_term];
    for i in 0..k {
        log_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + lp - lq;
        terms.push(log_term);
    }
    let peak = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (peak + terms.iter().map(|t| (t - peak).exp()).sum::<f64>().ln()).exp().min(1.0)
}

/// Good images needed before "none of them rejected" shows a false-reject rate of at
/// most `target` with `confidence` (solves `(1 − target)^n ≤ 1 − confidence`).
pub fn images_needed(target: f64, confidence: f64) -> usize {
    ((1.0 - confidence).ln() / (1.0 - target).ln()).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_matches_known_clopper_pearson_values() {
        // "Rule of three": 0 of n gives ≈ 3/n at 95 %; exact 1 − 0.05^(1/n).
        for n in [10usize, 37, 299, 1000] {
            let want = 1.0 - 0.05f64.powf(1.0 / n as f64);
            assert!((upper_bound(0, n, 0.95) - want).abs() < 1e-9, "n = {n}");
        }
        // 2 of 637: the exact one-sided 95 % bound is 0.00987 (beta quantile).
        assert!((upper_bound(2, 637, 0.95) - 0.009_87).abs() < 5e-5, "{}", upper_bound(2, 637, 0.95));
        assert_eq!(upper_bound(5, 5, 0.95), 1.0);
        assert!(upper_bound(1, 100, 0.99) > upper_bound(1, 100, 0.95));
    }

    #[test]
    fn images_needed_is_the_first_sample_that_can_show_the_target() {
        let n = images_needed(0.01, 0.95);
        assert_eq!(n, 299);
        assert!(upper_bound(0, n, 0.95) <= 0.01 && upper_bound(0, n - 1, 0.95) > 0.01);
    }
}
