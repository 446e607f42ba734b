//! Score + threshold → verdict: the one decision rule both sides apply.
//!
//! Lives in the shared crate so that `kensa eval` and the box can never disagree on how a
//! score becomes OK or NG (for example on ties, or on a NaN from a broken model).

use serde::{Deserialize, Serialize};

/// Outcome of inspecting one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// Score below the threshold: the part passes.
    Ok,
    /// Score at or above the threshold: the part is rejected.
    Ng,
    /// The part could not be inspected (no frame, model failure, invalid score). The box's
    /// fail-safe policy decides what happens to it; it is never silently passed.
    Uninspected,
}

impl Verdict {
    /// How logs, the CLI and reports write it: `OK`, `NG`, `UNINSPECTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Ng => "NG",
            Verdict::Uninspected => "UNINSPECTED",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`, so that `{:<11}` aligns columns.
        f.pad(self.as_str())
    }
}

/// Apply the decision rule: NG when `score >= threshold`, uninspected when the score is
/// not a finite number.
pub fn decide(score: f32, threshold: f32) -> Verdict {
    if !score.is_finite() || !threshold.is_finite() {
        Verdict::Uninspected
    } else if score >= threshold {
        Verdict::Ng
    } else {
        Verdict::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_read_the_same_everywhere_and_pad_in_columns() {
        assert_eq!(format!("[{:<4}]", Verdict::Ok), "[OK  ]");
        assert_eq!(Verdict::Uninspected.to_string(), "UNINSPECTED");
    }

    #[test]
    fn threshold_is_inclusive_for_ng() {
        assert_eq!(decide(0.5, 0.5), Verdict::Ng);
        assert_eq!(decide(0.499_999, 0.5), Verdict::Ok);
        assert_eq!(decide(7.0, 0.5), Verdict::Ng);
    }

    #[test]
    fn non_finite_scores_are_never_ok() {
        for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(decide(s, 1.0), Verdict::Uninspected, "score {s}");
        }
        assert_eq!(decide(0.1, f32::NAN), Verdict::Uninspected);
    }
}
