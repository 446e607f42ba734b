//! Decision thresholds with the evidence behind them.
//!
//! Good images alone: the threshold is the lowest one whose false-reject rate is, with
//! the stated confidence, at most the target. The rate's upper bound is the exact
//! (Clopper–Pearson) binomial bound on "k of n out-of-sample good scores reach the
//! threshold"; it needs no assumption about the score distribution. When even "none of
//! n" cannot show the target, the sample is too small: the threshold sits just above
//! every good score, and [`images_needed`] says how many good images would show it.
//! With defective validation images as well, the threshold is the best F1
//! ([`crate::metrics::f1_max`]).

use serde::{Deserialize, Serialize};

use crate::metrics;
use crate::model::{Threshold, ThresholdRule};

/// Default confidence of the false-reject bound.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// Fewest defective validation images an F1-optimal threshold is trusted on; below it
/// training warns (the threshold then rests on a handful of defects).
pub const MIN_VALIDATION_DEFECTS: usize = 10;

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

/// The threshold for `evidence`: best F1 when it holds good and defective scores, else
/// the lowest threshold whose false-reject rate is at most `frr` with `confidence`.
pub fn choose(evidence: &Evidence, frr: f64, confidence: f64) -> Threshold {
    if !evidence.good.is_empty() && !evidence.defective.is_empty() {
        let scores: Vec<f32> = evidence.good.iter().chain(&evidence.defective).copied().collect();
        let positive: Vec<bool> =
            evidence.good.iter().map(|_| false).chain(evidence.defective.iter().map(|_| true)).collect();
        if let Some((_, t)) = metrics::f1_max(&scores, &positive) {
            return Threshold {
                value: t,
                rule: ThresholdRule::F1Optimal {
                    good: evidence.good.len(),
                    defective: evidence.defective.len(),
                },
            };
        }
    }
    false_reject_rate(&evidence.good, frr, confidence)
}

/// The lowest threshold whose false-reject rate on `good` is at most `frr` with
/// `confidence`; just above every score when the sample is too small to show `frr`.
pub fn false_reject_rate(good: &[f32], frr: f64, confidence: f64) -> Threshold {
    let mut s = good.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let n = s.len();
    // Most rejections allowed: the largest k whose bound still meets the target.
    let allowed = (0..n).take_while(|&k| upper_bound(k, n, confidence) <= frr).last();
    // Just above the (allowed + 1)-th highest score, so that score itself passes; ties
    // with it pass too, so fewer than `allowed` may be rejected, never more.
    let value = match (allowed, s.first()) {
        (_, None) => f32::INFINITY,
        (None, Some(top)) => top.next_up(),
        (Some(k), Some(_)) => s[k.min(n - 1)].next_up(),
    };
    let at = false_rejects(good, value, confidence);
    Threshold {
        value,
        rule: ThresholdRule::FalseRejectRate {
            target: frr,
            confidence,
            good: n,
            rejected: at.rejected,
            bound: at.bound,
        },
    }
}

/// What makes `t` weak evidence, in words, for training output, `inspect` and reports.
pub fn warnings(t: &Threshold, evidence: &Evidence, frr: f64, confidence: f64) -> Vec<String> {
    let mut out = Vec::new();
    match t.rule {
        ThresholdRule::FalseRejectRate { good, bound, .. } if bound > frr => out.push(format!(
            "{good} good images cannot show a {:.1} % false-reject rate with {:.0} % confidence (they show \
             at most {:.1} %); add good images until there are {}",
            100.0 * frr,
            100.0 * confidence,
            100.0 * bound,
            images_needed(frr, confidence)
        )),
        ThresholdRule::F1Optimal { defective, .. } if defective < MIN_VALIDATION_DEFECTS => {
            out.push(format!(
                "the threshold is the best F1 on only {defective} defective validation images; at least \
             {MIN_VALIDATION_DEFECTS} are needed for it to mean much"
            ))
        }
        _ => {}
    }
    if matches!(t.rule, ThresholdRule::F1Optimal { .. }) {
        let at = false_rejects(&evidence.good, t.value, confidence);
        if at.bound > frr {
            out.push(format!(
                "at this threshold {} of {} good images are rejected: the false-reject rate may be as high \
                 as {:.1} % ({:.0} % confidence)",
                at.rejected,
                at.good,
                100.0 * at.bound,
                100.0 * confidence
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(good: &[f32], defective: &[f32]) -> Evidence {
        Evidence { good: good.to_vec(), defective: defective.to_vec() }
    }

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

    #[test]
    fn a_large_sample_rejects_as_many_as_the_bound_allows() {
        let s: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        let t = false_reject_rate(&s, 0.01, 0.95);
        let ThresholdRule::FalseRejectRate { rejected, bound, good, .. } = t.rule else { panic!("{t:?}") };
        assert_eq!(good, 1000);
        assert_eq!(rejected, s.iter().filter(|&&v| v >= t.value).count());
        assert!(bound <= 0.01, "{bound}");
        // One more rejection would break the bound.
        assert!(upper_bound(rejected + 1, 1000, 0.95) > 0.01);
        assert!(rejected >= 4, "a 1000-image sample can afford a few rejections: {rejected}");
    }

    #[test]
    fn a_small_sample_passes_every_good_image_and_says_it_cannot_show_the_target() {
        let good = [0.3f32, 0.9, 0.5];
        let t = false_reject_rate(&good, 0.01, 0.95);
        assert!(good.iter().all(|&v| v < t.value) && t.value - 0.9 < 1e-6);
        let ThresholdRule::FalseRejectRate { rejected: 0, bound, .. } = t.rule else { panic!("{t:?}") };
        assert!(bound > 0.6, "three images show little: {bound}");
        assert!(t.rule.to_string().contains("299 good images"), "{}", t.rule);
    }

    #[test]
    fn ties_at_the_cut_are_never_rejected_beyond_the_allowance() {
        let mut s = vec![1.0f32; 995];
        s.extend([5.0; 5]);
        let t = false_reject_rate(&s, 0.01, 0.95);
        let ThresholdRule::FalseRejectRate { rejected, bound, .. } = t.rule else { panic!() };
        assert!(bound <= 0.01 && rejected <= 5, "{t:?}");
    }

    #[test]
    fn defects_in_the_evidence_give_an_f1_threshold() {
        let t = choose(&ev(&[0.1, 0.2], &[0.9, 1.1]), 0.01, 0.95);
        assert!(t.value > 0.2 && t.value <= 0.9, "{t:?}");
        assert_eq!(t.rule, ThresholdRule::F1Optimal { good: 2, defective: 2 });
        let t = choose(&ev(&[0.1, 0.2, 0.3], &[]), 0.01, 0.95);
        assert!(t.value > 0.3);
        assert!(matches!(t.rule, ThresholdRule::FalseRejectRate { good: 3, .. }));
    }
}
