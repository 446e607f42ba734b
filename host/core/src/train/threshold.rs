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

use crate::error::{Result, ensure, fail};
pub use crate::evidence::{Evidence, FalseRejects, false_rejects, images_needed, upper_bound};
use crate::metrics;
use crate::model::{Threshold, ThresholdRule, TrainedModel};

/// Default confidence of the false-reject bound.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// Fewest defective validation images an F1-optimal threshold is trusted on; below it
/// training warns (the threshold then rests on a handful of defects).
pub const MIN_VALIDATION_DEFECTS: usize = 10;

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

/// Move `model`'s operating point: to `threshold` set by hand, or to the false-reject
/// rule for `frr` re-run on the good scores training measured out of sample.
pub fn set_operating_point(
    model: &mut TrainedModel,
    threshold: Option<f32>,
    frr: Option<f64>,
    confidence: f64,
) -> Result<()> {
    match (threshold, frr) {
        (Some(_), Some(_)) => fail!(Invalid, "give a threshold or a false-reject rate, not both"),
        (Some(value), None) => {
            ensure!(!value.is_nan(), Invalid, "threshold must be a number");
            model.threshold = Threshold { value, rule: ThresholdRule::Manual };
        }
        (None, Some(frr)) => {
            ensure!(frr > 0.0 && frr < 1.0, Invalid, "false-reject rate {frr} must be between 0 and 1");
            ensure!(
                confidence > 0.0 && confidence < 1.0,
                Invalid,
                "confidence {confidence} must be between 0 and 1"
            );
            ensure!(
                !model.training.evidence.good.is_empty(),
                Invalid,
                "this model carries no good-image scores to choose a threshold from; give --threshold"
            );
            model.threshold = false_reject_rate(&model.training.evidence.good, frr, confidence);
        }
        (None, None) => {}
    }
    Ok(())
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
