//! Decision thresholds from held-out scores: F1-optimal when the validation images
//! include defects ([`crate::metrics::f1_max`]), else a target false-reject rate on the
//! good ones.

use crate::metrics;
use crate::model::{Threshold, ThresholdRule};

/// The threshold for validation `scores` (`positive`: defective): the best F1 when
/// there are good and defective images, else the `frr` quantile of the good ones.
pub fn choose(scores: &[f32], positive: &[bool], frr: f64) -> Threshold {
    let good = positive.iter().filter(|p| !**p).count();
    match metrics::f1_max(scores, positive) {
        Some((_, t)) if good > 0 => {
            Threshold { value: t, rule: ThresholdRule::F1Optimal { good, defective: positive.len() - good } }
        }
        _ => {
            let good_scores: Vec<f32> =
                scores.iter().zip(positive).filter(|(_, p)| !**p).map(|(s, _)| *s).collect();
            Threshold {
                value: false_reject_rate(&good_scores, frr),
                rule: ThresholdRule::FalseRejectRate { target: frr, held_out: good_scores.len() },
            }
        }
    }
}

/// The smallest threshold rejecting at most `frr` of `good_scores` (NG = score ≥ t).
pub fn false_reject_rate(good_scores: &[f32], frr: f64) -> f32 {
    let mut s = good_scores.to_vec();
    s.sort_by(f32::total_cmp);
    let allowed = (frr * s.len() as f64).floor() as usize;
    let q = s[s.len() - 1 - allowed.min(s.len() - 1)];
    // Just above the quantile score, so that image itself passes.
    q.next_up()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defects_in_validation_give_an_f1_threshold_and_good_images_alone_a_false_reject_rate() {
        let t = choose(&[0.1, 0.2, 0.9, 1.1], &[false, false, true, true], 0.01);
        assert!(t.value > 0.2 && t.value <= 0.9, "{t:?}");
        assert_eq!(t.rule, ThresholdRule::F1Optimal { good: 2, defective: 2 });
        let t = choose(&[0.1, 0.2, 0.3], &[false; 3], 0.01);
        assert!(t.value > 0.3);
        assert_eq!(t.rule, ThresholdRule::FalseRejectRate { target: 0.01, held_out: 3 });
    }

    #[test]
    fn false_reject_rate_rejects_at_most_the_target_share() {
        let s: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let t = false_reject_rate(&s, 0.05);
        let rejected = s.iter().filter(|&&v| v >= t).count();
        assert_eq!(rejected, 5);
        // With few images the rule falls back to passing every held-out image.
        let t = false_reject_rate(&[0.3, 0.9, 0.5], 0.01);
        assert!(t > 0.9 && [0.3f32, 0.9, 0.5].iter().all(|&v| v < t));
    }
}
