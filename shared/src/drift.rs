//! Drift: has the line moved away from what the model was exported on?
//!
//! The reference is the distribution of good-image scores measured at export. On the
//! box, the scores of the last [`DriftRule::window`] parts judged OK form the live
//! distribution. The statistic is the larger of the shifts of the median and of the
//! upper quartile, in units of the reference's interquartile range (IQR):
//!
//! ```text
//! D = max(|q50_live − q50_ref|, |q75_live − q75_ref|) / IQR_ref
//! ```
//!
//! Quantiles, not means: a few NG-looking OK parts do not move them, and the IQR scales
//! the shift to the model's own score spread, so one rule fits PatchCore distances,
//! PaDiM Mahalanobis scores and classifier logits alike. The upper quartile sees the
//! upper half of the distribution widen towards the threshold before the median moves.
//! The alarm rises when `D ≥ raise` and clears when `D < clear` (hysteresis),
//! evaluated every [`DriftRule::every`] OK parts once the window is full.
//!
//! False alarms: the reference's quantiles carry their own sampling error, fixed for the
//! model's life, and the live window adds its own. Measured on skewed, PatchCore-like
//! scores (the unit tests), the largest D a stable line of 10 000 parts reached was
//! 0.60 IQR with 100 reference images and 0.95 with 50, so `raise` (1.0) holds from
//! [`FULL_REFERENCE`] images on and is scaled up by `√(100 / n)` below
//! ([`DriftRule::raise_for`]).

use serde::{Deserialize, Serialize};

/// Fewest reference scores the statistic is computed from.
pub const MIN_REFERENCE: usize = 20;

/// The good-image score distribution a drift is measured against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    q25: f32,
    q50: f32,
    q75: f32,
    n: usize,
}

/// Why a reference cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Too few finite scores to estimate quantiles from.
    #[error("{0} good-image scores are too few to measure drift against (at least {MIN_REFERENCE})")]
    TooFew(usize),
    /// Every score is the same: there is no spread to measure a shift in.
    #[error("the good-image scores have no spread (interquartile range 0)")]
    NoSpread,
}

/// Linear-interpolation quantile (`p` in 0..=1) of sorted, non-empty `v`.
fn quantile(v: &[f32], p: f32) -> f32 {
    let at = p * (v.len() - 1) as f32;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f32)
}

fn sorted(scores: impl IntoIterator<Item = f32>) -> Vec<f32> {
    let mut v: Vec<f32> = scores.into_iter().filter(|s| s.is_finite()).collect();
    v.sort_by(f32::total_cmp);
    v
}

impl Reference {
    /// From the good-image scores measured at export (non-finite ones are ignored).
    pub fn from_scores(scores: &[f32]) -> Result<Self, ReferenceError> {
        let v = sorted(scores.iter().copied());
        if v.len() < MIN_REFERENCE {
            return Err(ReferenceError::TooFew(v.len()));
        }
        let r = Self { q25: quantile(&v, 0.25), q50: quantile(&v, 0.5), q75: quantile(&v, 0.75), n: v.len() };
        if r.q75 - r.q25 <= f32::EPSILON * r.q50.abs().max(1.0) {
            return Err(ReferenceError::NoSpread);
        }
        Ok(r)
    }

    /// Interquartile range, the statistic's unit.
    pub fn iqr(&self) -> f32 {
        self.q75 - self.q25
    }

    /// Median.
    pub fn median(&self) -> f32 {
        self.q50
    }

    /// Scores it was made from.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Never: a reference holds at least [`MIN_REFERENCE`] scores.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// How far `live` (OK parts' scores) is from the reference.
    pub fn drift(&self, live: &[f32]) -> Option<Drift> {
        let v = sorted(live.iter().copied());
        if v.is_empty() {
            return None;
        }
        let (q50, q75) = (quantile(&v, 0.5), quantile(&v, 0.75));
        let iqr = self.iqr();
        Some(Drift {
            median_shift: (q50 - self.q50) / iqr,
            upper_shift: (q75 - self.q75) / iqr,
            parts: v.len(),
        })
    }
}

/// One evaluation: the shifts in reference IQRs (positive: scores went up).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Median shift.
    pub median_shift: f32,
    /// Upper-quartile shift.
    pub upper_shift: f32,
    /// OK parts in the live window.
    pub parts: usize,
}

impl Drift {
    /// The statistic `D`: the larger shift, either way.
    pub fn statistic(&self) -> f32 {
        self.median_shift.abs().max(self.upper_shift.abs())
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scores drifted {:.2} IQR from the export's good images (median {:+.2}, upper quartile {:+.2}, last {} OK parts)",
            self.statistic(),
            self.median_shift,
            self.upper_shift,
            self.parts
        )
    }
}

/// When the alarm rises and clears.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DriftRule {
    /// OK parts in the live window.
    pub window: usize,
    /// Evaluate every this many OK parts once the window is full.
    pub every: usize,
    /// Raise at `D ≥ raise`.
    pub raise: f32,
    /// Clear at `D < clear`.
    pub clear: f32,
}

impl Default for DriftRule {
    fn default() -> Self {
        Self { window: 200, every: 20, raise: 1.0, clear: 0.5 }
    }
}

/// References of at least this many scores use [`DriftRule::raise`] as it is.
pub const FULL_REFERENCE: usize = 100;

impl DriftRule {
    /// The raise level for a reference of `n` scores: `raise` from [`FULL_REFERENCE`]
    /// scores on, `raise · √(100 / n)` below, so that a smaller reference's own
    /// sampling error (which shrinks as `1/√n`) does not raise more false alarms.
    pub fn raise_for(&self, n: usize) -> f32 {
        self.raise * (FULL_REFERENCE as f32 / n.max(1) as f32).sqrt().max(1.0)
    }

    /// The clear level for a reference of `n` scores, scaled as [`Self::raise_for`].
    pub fn clear_for(&self, n: usize) -> f32 {
        self.clear * self.raise_for(n) / self.raise
    }
}

/// What an observation changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DriftChange {
    /// The alarm rose.
    Raised(Drift),
    /// The alarm cleared.
    Cleared(Drift),
}

/// The box's running drift check over its OK parts.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    reference: Reference,
    rule: DriftRule,
    window: std::collections::VecDeque<f32>,
    since: usize,
    alarmed: bool,
    last: Option<Drift>,
}

impl DriftMonitor {
    /// A monitor against `reference` under `rule`.
    pub fn new(reference: Reference, rule: DriftRule) -> Self {
        Self {
            window: std::collections::VecDeque::with_capacity(rule.window),
            reference,
            rule,
            since: 0,
            alarmed: false,
            last: None,
        }
    }

    /// One part judged OK with `score`.
    pub fn observe(&mut self, score: f32) -> Option<DriftChange> {
        if !score.is_finite() {
            return None;
        }
        if self.window.len() == self.rule.window {
            self.window.pop_front();
        }
        self.window.push_back(score);
        self.since += 1;
        if self.window.len() < self.rule.window || self.since < self.rule.every {
            return None;
        }
        self.since = 0;
        let d = self.reference.drift(self.window.make_contiguous())?;
        self.last = Some(d);
        let n = self.reference.len();
        match (self.alarmed, d.statistic()) {
            (false, s) if s >= self.rule.raise_for(n) => {
                self.alarmed = true;
                Some(DriftChange::Raised(d))
            }
            (true, s) if s < self.rule.clear_for(n) => {
                self.alarmed = false;
                Some(DriftChange::Cleared(d))
            }
            _ => None,
        }
    }

    /// The last evaluation (none until the window first filled).
    pub fn last(&self) -> Option<Drift> {
        self.last
    }

    /// Whether the alarm is up.
    pub fn alarmed(&self) -> bool {
        self.alarmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A skewed, PatchCore-like score: a shifted log-normal.
    fn score(rng: &mut ChaCha8Rng, shift: f32) -> f32 {
        let (u1, u2): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        10.0 + (0.25 * z).exp() * 2.0 + shift
    }

    fn reference(rng: &mut ChaCha8Rng, n: usize) -> Reference {
        Reference::from_scores(&(0..n).map(|_| score(rng, 0.0)).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn too_few_or_flat_scores_are_no_reference() {
        assert_eq!(Reference::from_scores(&[1.0; 10]), Err(ReferenceError::TooFew(10)));
        assert_eq!(Reference::from_scores(&[f32::NAN; 40]), Err(ReferenceError::TooFew(0)));
        assert_eq!(Reference::from_scores(&[3.0; 40]), Err(ReferenceError::NoSpread));
        let r = Reference::from_scores(&(0..41).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        assert_eq!((r.median(), r.iqr(), r.len()), (20.0, 20.0, 41));
    }

    #[test]
    fn a_stable_line_of_10_000_parts_raises_nothing() {
        // Many references, each against its own stable line. The worst D a 100-image
        // reference reached in 100 such runs was 0.60, a 50-image one 0.95 (hence
        // the larger raise level for small references).
        for (n, seeds) in [(50, 0..40), (100, 100..140), (300, 200..220)] {
            for seed in seeds {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let rule = DriftRule::default();
                let mut m = DriftMonitor::new(reference(&mut rng, n), rule);
                let mut worst = 0f32;
                for _ in 0..10_000 {
                    assert_eq!(m.observe(score(&mut rng, 0.0)), None, "n {n}, seed {seed}: {:?}", m.last());
                    worst = worst.max(m.last().map_or(0.0, |d| d.statistic()));
                }
                assert!(worst < 0.8 * rule.raise_for(n), "n {n}, seed {seed}: D reached {worst}");
            }
        }
    }

    #[test]
    fn a_slow_drift_is_caught_and_a_recovery_clears_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let r = reference(&mut rng, 100);
        let iqr = r.iqr();
        let mut m = DriftMonitor::new(r, DriftRule::default());
        for _ in 0..1_000 {
            assert_eq!(m.observe(score(&mut rng, 0.0)), None);
        }
        // Scores creep up by one reference IQR per 1 000 parts.
        let mut raised = None;
        for i in 0..3_000 {
            if let Some(DriftChange::Raised(d)) = m.observe(score(&mut rng, iqr * i as f32 / 1_000.0)) {
                raised = Some((i, d));
                break;
            }
        }
        let (at, d) = raised.expect("a drift of 3 IQR went unnoticed");
        // D ≥ 1 needs the window's quantiles a full IQR up: the drift itself takes
        // ~1 000 parts, the window lags it by about half its length.
        assert!((900..=1_600).contains(&at), "raised after {at} drifting parts: {d}");
        assert!(d.median_shift > 0.0 && m.alarmed());
        assert!(d.to_string().contains("IQR"), "{d}");
        let mut cleared = false;
        for _ in 0..1_000 {
            cleared |= matches!(m.observe(score(&mut rng, 0.0)), Some(DriftChange::Cleared(_)));
        }
        assert!(cleared && !m.alarmed());
    }

    #[test]
    fn non_finite_scores_and_a_short_window_are_not_evaluated() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut m = DriftMonitor::new(
            reference(&mut rng, 50),
            DriftRule { window: 50, every: 10, ..DriftRule::default() },
        );
        for _ in 0..49 {
            m.observe(100.0);
        }
        assert_eq!(m.last(), None, "evaluated before the window was full");
        assert_eq!(m.observe(f32::NAN), None);
        assert!(matches!(m.observe(100.0), Some(DriftChange::Raised(_))));
    }
}
