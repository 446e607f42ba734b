//! When to fire the pusher: pure timing logic, no clock and no pins.
//!
//! A part captured at `t` reaches the pusher at `t + delay`. Each reject becomes a pulse
//! `[t + delay, t + delay + width)`. Pulses closer than `min_gap` merge into one longer
//! stroke (the cylinder cannot retract and fire again in less), so neighbouring NG parts
//! are both pushed. A decision that arrives after `t + delay − lead` cannot be honoured
//! and is reported [`Outcome::Late`] for the fail-safe policy to handle.
//!
//! Time is µs on one monotonic clock, passed in by the caller; tests drive it by hand.

use std::collections::VecDeque;

/// Belt geometry and pusher timing, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeltTiming {
    /// Capture → part in front of the pusher.
    pub delay_us: u64,
    /// Pulse width.
    pub width_us: u64,
    /// Least time between the end of one pulse and the start of the next.
    pub min_gap_us: u64,
    /// Least notice the output needs before a pulse starts.
    pub lead_us: u64,
}

impl BeltTiming {
    /// This timing with a new delay and pulse width (ms, as a technician sets them),
    /// or why they cannot work.
    pub fn with_reject(self, delay_ms: f32, pulse_ms: f32) -> Result<Self, String> {
        if !(pulse_ms.is_finite() && pulse_ms > 0.0 && pulse_ms <= 10_000.0) {
            return Err(format!("pulse width {pulse_ms} ms is not in (0, 10000]"));
        }
        if !(delay_ms.is_finite() && delay_ms <= 600_000.0) {
            return Err(format!("delay {delay_ms} ms is not a number up to 600000"));
        }
        let us = |ms: f32| (f64::from(ms) * 1000.0).round() as u64;
        if delay_ms <= 0.0 || us(delay_ms) <= self.lead_us {
            return Err(format!(
                "delay {delay_ms} ms must be longer than the output's lead time ({} ms)",
                self.lead_us as f64 / 1e3
            ));
        }
        Ok(Self { delay_us: us(delay_ms), width_us: us(pulse_ms), ..self })
    }
}

/// What happened to a reject request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new pulse starts at this time.
    Scheduled {
        /// Pulse start, µs.
        at_us: u64,
    },
    /// Folded into the pulse already planned around this part's slot.
    Merged {
        /// Start of the combined pulse, µs.
        at_us: u64,
    },
    /// Too late: the part is past (or about to pass) the pusher.
    Late {
        /// When the pulse should have started, µs.
        due_us: u64,
    },
}

/// A level change on the reject output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// When, µs.
    pub at_us: u64,
    /// `true` = pusher out.
    pub high: bool,
}

#[derive(Debug, Clone, Copy)]
struct Pulse {
    start: u64,
    end: u64,
}

/// Pulses planned but not yet finished, in time order.
#[derive(Debug)]
pub struct RejectScheduler {
    timing: BeltTiming,
    pulses: VecDeque<Pulse>,
    high: bool,
}

impl RejectScheduler {
    /// An idle scheduler (output low).
    pub fn new(timing: BeltTiming) -> Self {
        Self { timing, pulses: VecDeque::new(), high: false }
    }

    /// Timing in use.
    pub fn timing(&self) -> BeltTiming {
        self.timing
    }

    /// Use `timing` for parts rejected from now on; pulses already planned keep theirs.
    pub fn set_timing(&mut self, timing: BeltTiming) {
        self.timing = timing;
    }

    /// Ask for the part captured at `captured_us` to be pushed off; `now_us` is when the
    /// decision is made.
    pub fn reject(&mut self, captured_us: u64, now_us: u64) -> Outcome {
        let t = self.timing;
        let start = captured_us + t.delay_us;
        if now_us + t.lead_us > start {
            return Outcome::Late { due_us: start };
        }
        self.stroke_at(start)
    }

    /// A stroke starting at `start` µs, merged with neighbours as close as the valve
    /// allows (a test fire, or a part's reject once its time is known).
    pub fn stroke_at(&mut self, start: u64) -> Outcome {
        let t = self.timing;
        let end = start + t.width_us;
        // Pulses are requested roughly in capture order; find the neighbours of this one.
        let idx = self.pulses.partition_point(|p| p.start <= start);
        if idx > 0 {
            let prev = &mut self.pulses[idx - 1];
            if start <= prev.end + t.min_gap_us {
                prev.end = prev.end.max(end);
                let at_us = prev.start;
                self.coalesce(idx - 1);
                return Outcome::Merged { at_us };
            }
        }
        if let Some(next) = self.pulses.get_mut(idx)
            && next.start <= end + t.min_gap_us
        {
            next.start = start;
            next.end = next.end.max(end);
            self.coalesce(idx);
            return Outcome::Merged { at_us: start };
        }
        self.pulses.insert(idx, Pulse { start, end });
        Outcome::Scheduled { at_us: start }
    }

    /// Merge pulse `i` with followers it now overlaps.
    fn coalesce(&mut self, i: usize) {
        while i + 1 < self.pulses.len()
            && self.pulses[i + 1].start <= self.pulses[i].end + self.timing.min_gap_us
        {
            let next = self.pulses.remove(i + 1).expect("index checked");
            self.pulses[i].end = self.pulses[i].end.max(next.end);
        }
    }

    /// Edges due at or before `now_us`, in order; the caller applies them to the pin.
    pub fn poll(&mut self, now_us: u64) -> Vec<Edge> {
        let mut edges = Vec::new();
        while let Some(p) = self.pulses.front().copied() {
            if !self.high && p.start <= now_us {
                self.high = true;
                edges.push(Edge { at_us: p.start, high: true });
            }
            if self.high && p.end <= now_us {
                self.high = false;
                edges.push(Edge { at_us: p.end, high: false });
                self.pulses.pop_front();
            } else {
                break;
            }
        }
        edges
    }

    /// When [`Self::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pulses.front().map(|p| if self.high { p.end } else { p.start })
    }

    /// Pulses not yet finished (in flight).
    pub fn pending(&self) -> usize {
        self.pulses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: BeltTiming =
        BeltTiming { delay_us: 250_000, width_us: 30_000, min_gap_us: 20_000, lead_us: 2_000 };

    /// Run the scheduler like the output thread would: wake at each deadline.
    fn drain(s: &mut RejectScheduler, until: u64) -> Vec<Edge> {
        let mut edges = Vec::new();
        while let Some(d) = s.next_deadline() {
            if d > until {
                break;
            }
            edges.extend(s.poll(d));
        }
        edges
    }

    #[test]
    fn a_new_reject_timing_applies_to_later_parts_and_bad_values_are_named() {
        let mut s = RejectScheduler::new(T);
        assert_eq!(s.reject(0, 10_000), Outcome::Scheduled { at_us: 250_000 });
        let slower = T.with_reject(400.0, 50.0).unwrap();
        assert_eq!((slower.delay_us, slower.width_us, slower.lead_us), (400_000, 50_000, T.lead_us));
        s.set_timing(slower);
        assert_eq!(s.reject(100_000, 110_000), Outcome::Scheduled { at_us: 500_000 });
        let edges = drain(&mut s, u64::MAX);
        let times: Vec<(u64, bool)> = edges.iter().map(|e| (e.at_us, e.high)).collect();
        assert_eq!(times, [(250_000, true), (280_000, false), (500_000, true), (550_000, false)]);
        assert!(T.with_reject(1.0, 50.0).unwrap_err().contains("lead time"));
        assert!(T.with_reject(400.0, 0.0).unwrap_err().contains("pulse width"));
        assert!(T.with_reject(f32::NAN, 50.0).is_err());
    }

    #[test]
    fn each_reject_fires_at_capture_plus_delay_with_many_parts_in_flight() {
        let mut s = RejectScheduler::new(T);
        // A part every 100 ms, decisions 40 ms after capture; every other part is NG, so up
        // to three pulses are planned at once.
        let ng: Vec<u64> = (0..10).filter(|i| i % 2 == 0).map(|i| i * 100_000).collect();
        for &cap in &ng {
            assert_eq!(s.reject(cap, cap + 40_000), Outcome::Scheduled { at_us: cap + T.delay_us });
        }
        assert_eq!(s.pending(), ng.len());
        let edges = drain(&mut s, u64::MAX);
        let rising: Vec<u64> = edges.iter().filter(|e| e.high).map(|e| e.at_us).collect();
        let falling: Vec<u64> = edges.iter().filter(|e| !e.high).map(|e| e.at_us).collect();
        assert_eq!(rising, ng.iter().map(|c| c + T.delay_us).collect::<Vec<_>>());
        assert_eq!(falling, ng.iter().map(|c| c + T.delay_us + T.width_us).collect::<Vec<_>>());
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn polling_late_still_emits_each_edge_once_in_order() {
        let mut s = RejectScheduler::new(T);
        s.reject(0, 1_000);
        s.reject(100_000, 101_000);
        let edges = s.poll(10_000_000);
        let levels: Vec<bool> = edges.iter().map(|e| e.high).collect();
        assert_eq!(levels, [true, false, true, false]);
        assert!(s.poll(20_000_000).is_empty());
    }

    #[test]
    fn close_rejects_merge_into_one_stroke() {
        let mut s = RejectScheduler::new(T);
        assert_eq!(s.reject(0, 10), Outcome::Scheduled { at_us: 250_000 });
        // Next part 40 ms later: its pulse would start 10 ms after the first ends.
        assert_eq!(s.reject(40_000, 40_010), Outcome::Merged { at_us: 250_000 });
        let edges = drain(&mut s, u64::MAX);
        assert_eq!(edges, vec![Edge { at_us: 250_000, high: true }, Edge { at_us: 320_000, high: false }]);
    }

    #[test]
    fn a_late_decision_is_reported_not_fired() {
        let mut s = RejectScheduler::new(T);
        assert_eq!(s.reject(0, 249_000), Outcome::Late { due_us: 250_000 });
        assert_eq!(s.reject(0, 300_000), Outcome::Late { due_us: 250_000 });
        assert_eq!(s.pending(), 0);
        assert!(drain(&mut s, u64::MAX).is_empty());
    }

    #[test]
    fn out_of_order_decisions_keep_pulses_sorted() {
        let mut s = RejectScheduler::new(T);
        s.reject(200_000, 210_000);
        s.reject(0, 220_000);
        let rising: Vec<u64> = drain(&mut s, u64::MAX).iter().filter(|e| e.high).map(|e| e.at_us).collect();
        assert_eq!(rising, vec![250_000, 450_000]);
    }
}
