//! One inspection station: frame in → score → verdict → reject scheduled, with the
//! fail-safe policy applied to every part that could not be inspected.
//!
//! No I/O of its own: the model is an [`Inspector`], the pusher an `OutputPin`, time a
//! [`Clock`]. Scoring ([`inspect`]) is apart from deciding ([`Station::decide`]) so the
//! daemon can score on a worker thread while the thread owning the station keeps the
//! pusher on time; tests call both and move the clock by hand.

use std::collections::VecDeque;

use embedded_hal::digital::OutputPin;
use image::{DynamicImage, RgbImage};
use kensa_shared::verdict::{Verdict, decide};
pub use kensa_shared::wire::Alarm;

use crate::actuator::{Pusher, Signal};
use crate::camera::{Frame, FrameError};
use crate::clock::Clock;
use crate::config::Uninspected;
use crate::permit::RunPermit;
use crate::schedule::{Outcome, RejectScheduler};

/// Scores a part image.
pub trait Inspector {
    /// Anomaly score of `image` (higher = more defective), or why it could not be scored.
    fn score(&mut self, image: &DynamicImage) -> Result<f32, String>;
    /// NG when `score ≥ threshold`.
    fn threshold(&self) -> f32;

    /// Take a model that arrived meanwhile (called between parts, also when no frame
    /// comes).
    fn refresh(&mut self) {}

    /// Why there is no model to score with, when there is none.
    fn missing(&self) -> Option<String> {
        None
    }

    /// The measured per-part latency on this box (µs), when known.
    fn latency_p99_us(&self) -> Option<u64> {
        None
    }
}

/// Why a part has no usable score. Every fault makes the part uninspected, and the
/// fail-safe policy decides what happens to it; the variant says what the technician
/// has to look at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fault {
    /// The part passed while the previous one was being inspected (inference is slower
    /// than the belt, or the camera dropped its frame).
    #[error("overrun: the part passed while the previous one was being inspected")]
    Overrun,
    /// No frame, or an unusable one: the camera (or folder) said why.
    #[error("{0}")]
    Frame(String),
    /// The model failed on the frame.
    #[error("model error: {0}")]
    Model(String),
    /// The model returned a score that is not a number.
    #[error("score {0} is not a number")]
    NotANumber(f32),
}

/// A part after the model: its number, ground truth if known, and score or fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    /// Part number on this line, from 0 in arrival order. Every part has one, whether a
    /// frame came or not (a part the camera missed is still a part on the belt).
    pub part: u64,
    /// Ground truth, when the source knows it.
    pub truth: Option<bool>,
    /// The score, or why there is none.
    pub score: Result<f32, Fault>,
    /// A small copy of the frame, when there was one.
    pub thumbnail: Option<RgbImage>,
}

/// Longest side of the thumbnails kept of rejected parts (px): enough for a
/// technician to see the part, small enough for 64 of them and a serial line.
pub const THUMBNAIL_SIDE: u32 = 64;

/// The frame shrunk to fit [`THUMBNAIL_SIDE`] (never enlarged), aspect kept.
fn thumbnail(image: &DynamicImage) -> RgbImage {
    if image.width() <= THUMBNAIL_SIDE && image.height() <= THUMBNAIL_SIDE {
        image.to_rgb8()
    } else {
        image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE).to_rgb8()
    }
}

/// Score part `part` from `frame` (or carry the reason there is no frame).
pub fn inspect<I: Inspector>(inspector: &mut I, part: u64, frame: Result<Frame, FrameError>) -> Inspected {
    match frame {
        Ok(f) => Inspected {
            part,
            truth: f.truth,
            score: inspector.score(&f.image).map_err(Fault::Model),
            thumbnail: Some(thumbnail(&f.image)),
        },
        Err(e) => Inspected { part, truth: None, score: Err(Fault::Frame(e.to_string())), thumbnail: None },
    }
}

/// What was done with a part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Left on the belt.
    Pass,
    /// Pusher pulse planned (or merged into one).
    Reject(Outcome),
    /// Could not be pushed in time and the policy stops the line.
    StopLine,
}

/// The record of one part.
#[derive(Debug, Clone, PartialEq)]
pub struct PartResult {
    /// Part number on this line (see [`Inspected::part`]).
    pub part: u64,
    /// When the part passed the camera (µs): its trigger edge, or the capture. The
    /// pusher fires at this plus the belt delay.
    pub captured_us: u64,
    /// Decision time (µs).
    pub decided_us: u64,
    /// Score, when the part was scored.
    pub score: Option<f32>,
    /// OK / NG / uninspected.
    pub verdict: Verdict,
    /// What happened to the part.
    pub action: Action,
    /// Why it was uninspected, if it was.
    pub fault: Option<Fault>,
    /// Ground truth, when the source knows it.
    pub truth: Option<bool>,
    /// Thumbnail of a part that was not judged OK (NG, or uninspected with a frame).
    pub thumbnail: Option<RgbImage>,
    /// Why it was not passed: the score against the threshold, the fault, a decision
    /// after its reject slot. Empty for a part judged OK in time.
    pub reason: String,
    /// Preprocessing and inference time (µs), when the line measured it.
    pub inspect_us: Option<u64>,
}

impl PartResult {
    /// The decision as the wire and the telemetry report it.
    pub fn inspection(&self) -> kensa_shared::wire::Inspection {
        use kensa_shared::wire::PartAction;
        kensa_shared::wire::Inspection {
            part: self.part,
            captured_us: self.captured_us,
            score: self.score.unwrap_or(f32::NAN),
            verdict: self.verdict,
            latency_us: self.decided_us.saturating_sub(self.captured_us).min(u64::from(u32::MAX)) as u32,
            action: match self.action {
                Action::Pass => PartAction::Pass,
                Action::Reject(Outcome::Late { .. }) | Action::StopLine => PartAction::StopLine,
                Action::Reject(_) => PartAction::Push,
            },
            reason: self.reason.clone(),
        }
    }
}

/// Whether a belt delay of `delay_us` leaves a model of measured `p99_us` latency
/// `margin_us` beyond it; the alarm naming the numbers when not.
pub fn delay_fits(delay_us: u64, p99_us: Option<u64>, margin_us: u64) -> Result<(), Alarm> {
    match p99_us {
        Some(p99) if delay_us < p99 + margin_us => Err(Alarm::DelayTooShort {
            delay_ms: delay_us as f32 / 1e3,
            p99_ms: p99 as f32 / 1e3,
            margin_ms: margin_us as f32 / 1e3,
        }),
        _ => Ok(()),
    }
}

/// Running totals, as the link reports them. The station counts everything but
/// `overruns` (parts that passed while inference was behind), which the line counts.
pub use kensa_shared::wire::Counters;

/// Results kept for the diagnostics link.
pub const RECENT: usize = 64;

/// An inspection station.
pub struct Station<P, C> {
    threshold: f32,
    pusher: Pusher<P>,
    scheduler: RejectScheduler,
    clock: C,
    policy: Uninspected,
    counters: Counters,
    recent: VecDeque<PartResult>,
    /// What holds the line stopped; the run permit is on only while this is empty.
    alarms: Vec<Alarm>,
    /// The run-permit (line-OK) output.
    permit: Option<RunPermit>,
    /// An output raised while the line is stopped (a lamp, or a controller that wants a
    /// stop signal as well as the permit).
    line_stop: Option<Box<dyn Signal>>,
    latency: Latency,
    /// The latest part that came with a frame, thumbnail kept whatever its verdict.
    last_seen: Option<PartResult>,
}

/// The model's measured latency and the margin the belt delay must leave beyond it (µs).
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p99_us: Option<u64>,
    margin_us: u64,
}

impl<P: OutputPin, C: Clock> Station<P, C> {
    /// A station judging scores against `threshold`, rejecting through `pusher` on
    /// `scheduler`'s timing.
    pub fn new(
        threshold: f32,
        pusher: Pusher<P>,
        scheduler: RejectScheduler,
        clock: C,
        policy: Uninspected,
    ) -> Self {
        Self {
            threshold,
            pusher,
            scheduler,
            clock,
            policy,
            counters: Counters::default(),
            recent: VecDeque::with_capacity(RECENT),
            alarms: Vec::new(),
            permit: None,
            line_stop: None,
            latency: Latency::default(),
            last_seen: None,
        }
    }

    /// Raise `output` while the line must stop (a relay or lamp the line controller
    /// watches).
    pub fn with_line_stop(mut self, output: Box<dyn Signal>) -> Self {
        self.line_stop = Some(output);
        self.drive_outputs();
        self
    }

    /// Drive `permit` (the line-OK output) on while no alarm holds the line.
    pub fn with_run_permit(mut self, permit: RunPermit) -> Self {
        self.permit = Some(permit);
        self.drive_outputs();
        self
    }

    /// Require the belt delay to exceed the model's measured latency by `margin_us`.
    pub fn with_latency_margin(mut self, margin_us: u64) -> Self {
        self.latency.margin_us = margin_us;
        self
    }

    /// Carry on counting from `counters` (a pipeline restart keeps the totals).
    pub fn with_counters(mut self, counters: Counters) -> Self {
        self.counters = counters;
        self
    }

    /// Hold the line stopped for `alarm` (replacing one of the same kind).
    pub fn raise(&mut self, alarm: Alarm) {
        let kind = std::mem::discriminant(&alarm);
        match self.alarms.iter_mut().find(|a| std::mem::discriminant(*a) == kind) {
            Some(a) if *a == alarm => return,
            Some(a) => *a = alarm,
            None => {
                let stops = alarm.stops_line() && self.run_permit();
                if alarm.stops_line() {
                    tracing::error!("line stopped: {alarm}");
                } else {
                    tracing::error!("alarm: {alarm}");
                }
                self.alarms.push(alarm);
                if stops {
                    self.counters.line_stops += 1;
                }
            }
        }
        self.drive_outputs();
    }

    /// End the alarms `which` selects; the line runs again when none is left.
    pub fn clear(&mut self, which: impl Fn(&Alarm) -> bool) {
        let before = self.alarms.len();
        self.alarms.retain(|a| {
            let gone = which(a);
            if gone {
                tracing::warn!("alarm cleared: {a}");
            }
            !gone
        });
        if self.alarms.len() != before {
            if self.run_permit() {
                tracing::warn!("nothing holds the line: the run permit is on");
            }
            self.drive_outputs();
        }
    }

    /// The alarms in force, oldest first.
    pub fn alarms(&self) -> &[Alarm] {
        &self.alarms
    }

    /// Whether the line may run: no alarm that stops it, no latched stop.
    pub fn run_permit(&self) -> bool {
        !self.alarms.iter().any(Alarm::stops_line)
    }

    fn drive_outputs(&mut self) {
        let run = self.run_permit();
        let now = self.clock.now_us();
        if let Some(p) = &mut self.permit {
            p.set(run, now);
        }
        if let Some(out) = &mut self.line_stop
            && let Err(e) = out.set(!run)
        {
            tracing::error!("line-stop output failed to switch {}: {e}", if run { "off" } else { "on" });
        }
    }

    /// The model now in force measured `p99_us` per part (`None`: not measured); a belt
    /// delay that leaves less than the margin beyond it holds the line.
    pub fn set_latency(&mut self, p99_us: Option<u64>) {
        self.latency.p99_us = p99_us;
        match self.delay_fits(self.scheduler.timing().delay_us) {
            Ok(()) => self.clear(|a| matches!(a, Alarm::DelayTooShort { .. })),
            Err(a) => self.raise(a),
        }
    }

    /// Whether a belt delay of `delay_us` leaves the model its measured p99 latency plus
    /// the margin; the alarm to raise, naming both numbers, when not.
    pub fn delay_fits(&self, delay_us: u64) -> Result<(), Alarm> {
        delay_fits(delay_us, self.latency.p99_us, self.latency.margin_us)
    }

    /// Decide on the part captured at `captured_us` and act on it.
    pub fn decide(&mut self, captured_us: u64, part: Inspected) -> PartResult {
        let Inspected { part, truth, score: scored, thumbnail } = part;
        let (score, verdict, fault) = match scored {
            Ok(s) => {
                let v = decide(s, self.threshold);
                let fault = (v == Verdict::Uninspected).then_some(Fault::NotANumber(s));
                (Some(s), v, fault)
            }
            Err(fault) => (None, Verdict::Uninspected, Some(fault)),
        };
        let mut reason = match (&fault, score) {
            (Some(f), _) => f.to_string(),
            (None, Some(s)) if verdict == Verdict::Ng => {
                format!("score {s:.3} >= threshold {:.3}", self.threshold)
            }
            _ => String::new(),
        };
        let now = self.clock.now_us();
        self.counters.parts += 1;
        match verdict {
            Verdict::Ok => self.counters.ok += 1,
            Verdict::Ng => self.counters.ng += 1,
            Verdict::Uninspected => self.counters.uninspected += 1,
        }
        let reject = match verdict {
            Verdict::Ok => false,
            Verdict::Ng => true,
            Verdict::Uninspected => self.policy == Uninspected::Reject,
        };
        let action = if reject {
            match self.scheduler.reject(captured_us, now) {
                Outcome::Late { due_us } => {
                    self.counters.late += 1;
                    let late = format!(
                        "part {part} decided {:.0} ms after its reject slot",
                        now.saturating_sub(due_us) as f64 / 1e3
                    );
                    reason = if reason.is_empty() { late } else { format!("{reason}; {late}") };
                    self.stop_line(&reason)
                }
                o => {
                    self.counters.rejects += 1;
                    if matches!(o, Outcome::Merged { .. }) {
                        self.counters.merged += 1;
                    }
                    Action::Reject(o)
                }
            }
        } else if verdict == Verdict::Uninspected {
            self.stop_line(&format!("part {part} uninspected: {reason}"))
        } else {
            Action::Pass
        };
        let seen = thumbnail.clone();
        let thumbnail = thumbnail.filter(|_| verdict != Verdict::Ok);
        let r = PartResult {
            part,
            captured_us,
            decided_us: now,
            score,
            verdict,
            action,
            fault,
            truth,
            thumbnail,
            reason,
            inspect_us: None,
        };
        if seen.is_some() {
            self.last_seen = Some(PartResult { thumbnail: seen, ..r.clone() });
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(r.clone());
        r
    }

    /// A part that must leave the belt and cannot be pushed: stop the line (latched
    /// until a technician clears it; the first reason is kept).
    fn stop_line(&mut self, why: &str) -> Action {
        if !self.alarms.iter().any(|a| matches!(a, Alarm::LineStopped(_))) {
            self.raise(Alarm::LineStopped(why.to_string()));
        }
        Action::StopLine
    }

    /// Fire the pusher edges due now (returned) and keep the heartbeat going; call often
    /// (at least every millisecond). A stroke that starts later than half its width
    /// after its time has missed its part (the box stalled): the line stops.
    pub fn tick(&mut self) -> Result<Vec<crate::schedule::Edge>, P::Error> {
        let now = self.clock.now_us();
        if let Some(p) = &mut self.permit {
            p.tick(now);
        }
        let edges = self.pusher.drive(&mut self.scheduler, now)?;
        // Judged by when the output switched, not when this tick began.
        let switched = self.clock.now_us();
        let tolerance = self.scheduler.timing().width_us / 2;
        if let Some(e) = edges.iter().find(|e| e.high && switched.saturating_sub(e.at_us) > tolerance) {
            let why = format!(
                "a reject stroke started {:.0} ms after its time: the box stalled",
                (switched - e.at_us) as f64 / 1e3
            );
            self.stop_line(&why);
        }
        Ok(edges)
    }

    /// When `tick` next has work (µs), if any pulse is planned.
    pub fn next_deadline(&self) -> Option<u64> {
        self.scheduler.next_deadline()
    }

    /// Whether the line is stopped (the run permit off), latched or by an alarm.
    pub fn line_stopped(&self) -> bool {
        !self.run_permit()
    }

    /// Clear a latched line stop (the technician checked the line); alarms whose cause
    /// lasts keep the line stopped.
    pub fn clear_line_stop(&mut self) {
        self.clear(|a| matches!(a, Alarm::LineStopped(_)));
    }

    /// Reject timing in force.
    pub fn reject_timing(&self) -> crate::schedule::BeltTiming {
        self.scheduler.timing()
    }

    /// Time rejects of parts decided from now on with `timing` (set over the diagnostics
    /// link); strokes already planned keep theirs. A delay too short for the model's
    /// measured latency is refused.
    pub fn set_reject_timing(&mut self, timing: crate::schedule::BeltTiming) -> Result<(), Alarm> {
        self.delay_fits(timing.delay_us)?;
        let old = self.scheduler.timing();
        tracing::warn!(
            from_delay_us = old.delay_us,
            to_delay_us = timing.delay_us,
            from_pulse_us = old.width_us,
            to_pulse_us = timing.width_us,
            "reject timing changed"
        );
        self.scheduler.set_timing(timing);
        self.clear(|a| matches!(a, Alarm::DelayTooShort { .. }));
        Ok(())
    }

    /// The decision threshold in force.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Judge parts decided from now on against `threshold` (set over the diagnostics
    /// link, or brought by a newly flashed model).
    pub fn set_threshold(&mut self, threshold: f32) {
        tracing::warn!(from = self.threshold, to = threshold, "decision threshold changed");
        self.threshold = threshold;
    }

    /// One pusher stroke as soon as the belt timing allows, for wiring checks.
    pub fn test_reject(&mut self) {
        let lead = self.scheduler.timing().lead_us;
        let _ = self.scheduler.stroke_at(self.clock.now_us() + lead + 1_000);
    }

    /// The latest part that came with a frame (its thumbnail whatever the verdict): what
    /// the camera sees now.
    pub fn last_seen(&self) -> Option<&PartResult> {
        self.last_seen.as_ref()
    }

    /// Totals so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The last [`RECENT`] results, oldest first.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &PartResult> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::SimPin;
    use crate::clock::ManualClock;
    use crate::schedule::BeltTiming;

    /// Scores a frame by its mean grey level; fails on frames marked 13.
    struct MeanGrey;

    impl Inspector for MeanGrey {
        fn score(&mut self, image: &DynamicImage) -> Result<f32, String> {
            let g = image.to_luma8();
            let mean = g.pixels().map(|p| p[0] as f32).sum::<f32>() / g.len() as f32;
            if mean == 13.0 { Err("tensor shape mismatch".into()) } else { Ok(mean) }
        }
        fn threshold(&self) -> f32 {
            100.0
        }
    }

    const T: BeltTiming =
        BeltTiming { delay_us: 500_000, width_us: 40_000, min_gap_us: 10_000, lead_us: 1_000 };

    fn frame(seq: u64, grey: u8) -> Result<Frame, FrameError> {
        Ok(Frame {
            seq,
            image: DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([grey]))),
            truth: None,
            origin: format!("test {seq}"),
            dropped_before: 0,
        })
    }

    type TestStation = Station<SimPin<ManualClock>, ManualClock>;

    fn station(policy: Uninspected) -> (TestStation, ManualClock, SimPin<ManualClock>) {
        let clock = ManualClock::default();
        let pin = SimPin::new(clock.clone());
        let pusher = Pusher::new(pin.clone(), false).unwrap();
        (
            Station::new(MeanGrey.threshold(), pusher, RejectScheduler::new(T), clock.clone(), policy),
            clock,
            pin,
        )
    }

    /// Score and decide in one go, as the tests need no worker thread; parts are
    /// numbered in arrival order, as the line numbers them.
    fn handle(st: &mut TestStation, captured_us: u64, frame: Result<Frame, FrameError>) -> PartResult {
        let part = inspect(&mut MeanGrey, st.counters().parts, frame);
        st.decide(captured_us, part)
    }

    fn run_until(st: &mut TestStation, clock: &ManualClock, t: u64) {
        while clock.now_us() < t {
            clock.advance(250);
            st.tick().unwrap();
        }
    }

    #[test]
    fn ng_and_uninspected_parts_are_pushed_ok_parts_pass() {
        let (mut st, clock, pin) = station(Uninspected::Reject);
        let frames = [frame(0, 50), frame(1, 200), frame(2, 13), frame(3, 60)];
        let corrupt = FrameError::Corrupt { seq: 4, origin: "cam".into(), reason: "truncated JPEG".into() };
        let mut results = Vec::new();
        for (i, f) in frames.into_iter().chain([Err(corrupt)]).enumerate() {
            let cap = i as u64 * 100_000;
            run_until(&mut st, &clock, cap + 30_000); // inference takes 30 ms
            results.push(handle(&mut st, cap, f));
        }
        run_until(&mut st, &clock, 2_000_000);
        let verdicts: Vec<Verdict> = results.iter().map(|r| r.verdict).collect();
        let (ok, ng, none) = (Verdict::Ok, Verdict::Ng, Verdict::Uninspected);
        assert_eq!(verdicts, [ok, ng, none, ok, none]);
        assert!(matches!(&results[2].fault, Some(Fault::Model(m)) if m.contains("tensor shape mismatch")));
        assert!(matches!(&results[4].fault, Some(Fault::Frame(m)) if m.contains("truncated JPEG")));
        let rising: Vec<u64> = pin.log().lock().unwrap().iter().filter(|e| e.1).map(|e| e.0).collect();
        // Parts 1, 2 and 4 leave the belt at capture + 500 ms (±1 ms).
        let want = [100_000 + 500_000, 200_000 + 500_000, 400_000 + 500_000];
        assert_eq!(rising.len(), 3, "{rising:?}");
        for (r, w) in rising.iter().zip(want) {
            assert!(r.abs_diff(w) <= 1_000, "pulse at {r}, want {w}");
        }
        let c = st.counters();
        assert_eq!((c.parts, c.ok, c.ng, c.uninspected, c.rejects, c.late), (5, 2, 1, 2, 3, 0));
        assert!(!st.line_stopped());
        assert_eq!(st.recent().count(), 5);
        // Thumbnails are kept of the parts that left the belt and had a frame.
        let thumbs: Vec<Option<(u32, u32)>> =
            st.recent().map(|r| r.thumbnail.as_ref().map(|t| t.dimensions())).collect();
        assert_eq!(thumbs, [None, Some((4, 4)), Some((4, 4)), None, None]);
        let ng = st.recent().nth(1).unwrap().thumbnail.clone().unwrap();
        assert_eq!(ng.get_pixel(0, 0).0, [200, 200, 200], "the thumbnail shows the part");
    }

    #[test]
    fn thumbnails_are_small_whatever_the_frame_size() {
        let big = DynamicImage::ImageLuma8(image::GrayImage::new(1280, 960));
        let f = Frame { seq: 0, image: big, truth: None, origin: "cam".into(), dropped_before: 0 };
        let t = inspect(&mut MeanGrey, 0, Ok(f)).thumbnail.unwrap();
        assert_eq!(t.dimensions(), (THUMBNAIL_SIDE, THUMBNAIL_SIDE * 3 / 4));
    }

    #[test]
    fn a_late_ng_decision_stops_the_line_instead_of_passing_silently() {
        let (mut st, clock, pin) = station(Uninspected::Reject);
        run_until(&mut st, &clock, 600_000); // inference stalled past the pusher
        let r = handle(&mut st, 0, frame(0, 250));
        assert_eq!((r.verdict, r.action), (Verdict::Ng, Action::StopLine));
        assert!(st.line_stopped());
        assert_eq!(st.counters().late, 1);
        run_until(&mut st, &clock, 2_000_000);
        assert_eq!(pin.log().lock().unwrap().len(), 1, "no pulse fired for the late part");
    }

    #[test]
    fn stop_line_policy_stops_for_uninspected_parts() {
        let (st, clock, _) = station(Uninspected::StopLine);
        let relay = SimPin::new(clock.clone());
        let mut st =
            st.with_line_stop(Box::new(crate::actuator::PinSignal::new(relay.clone(), false).unwrap()));
        run_until(&mut st, &clock, 10_000);
        let r = handle(
            &mut st,
            0,
            Err(FrameError::Lost { device: "/dev/video0".into(), reason: "unplugged".into() }),
        );
        assert_eq!((r.verdict, r.action), (Verdict::Uninspected, Action::StopLine));
        assert_eq!(st.counters().line_stops, 1);
        // The relay went up once (at 10 ms) and stays up for a second failure.
        handle(
            &mut st,
            20_000,
            Err(FrameError::Lost { device: "/dev/video0".into(), reason: "gone".into() }),
        );
        let levels = |p: &SimPin<_>| p.log().lock().unwrap().iter().map(|e| e.1).collect::<Vec<_>>();
        assert_eq!(levels(&relay)[1..], [false, true]);
        st.clear_line_stop();
        assert!(!st.line_stopped());
        assert_eq!(levels(&relay)[1..], [false, true, false]);
    }

    #[test]
    fn parts_too_close_for_two_pulses_share_one_stroke_and_are_counted() {
        let (mut st, clock, pin) = station(Uninspected::Reject);
        run_until(&mut st, &clock, 40_000);
        handle(&mut st, 0, frame(0, 250));
        handle(&mut st, 10_000, frame(1, 250));
        run_until(&mut st, &clock, 2_000_000);
        let c = st.counters();
        assert_eq!((c.ng, c.rejects, c.merged), (2, 2, 1));
        let rising = pin.log().lock().unwrap().iter().filter(|e| e.1).count();
        assert_eq!(rising, 1);
    }

    #[test]
    fn the_recent_ring_keeps_the_last_results() {
        let (mut st, clock, _) = station(Uninspected::Reject);
        for i in 0..(RECENT as u64 + 10) {
            clock.advance(1_000);
            handle(&mut st, clock.now_us(), frame(i, 10));
        }
        let parts: Vec<u64> = st.recent().map(|r| r.part).collect();
        assert_eq!(parts.len(), RECENT);
        assert_eq!(parts[0], 10);
    }
}
