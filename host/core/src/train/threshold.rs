//! Decision thresholds from held-out scores. The F1-optimal rule is
//! [`crate::metrics::f1_max`]; the rule for good images only is here.

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
