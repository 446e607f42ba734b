//! Running the line: a worker thread captures and scores frames while the calling thread
//! owns the station, so reject pulses stay on time however long inference takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use embedded_hal::digital::OutputPin;

use crate::camera::{FrameError, FrameSource};
use crate::clock::Clock;
use crate::schedule::Outcome;
use crate::station::{Action, Alarm, Counters, Fault, Inspected, Inspector, PartResult, Station, inspect};

/// When to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Stop after this many parts (`None`: until the source ends or a stop is asked).
    pub parts: Option<u64>,
}

/// Camera-loss retry: first delay and cap (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// First delay.
    pub first_ms: f64,
    /// Longest delay.
    pub max_ms: f64,
}

/// Timings the worker measured for one part (µs).
#[derive(Debug, Clone, Copy)]
struct WorkerTimes {
    /// Waiting for and decoding the frame.
    capture_us: u64,
    /// Preprocessing and inference.
    inspect_us: u64,
    /// When scoring finished, on the line's clock.
    scored_at_us: u64,
}

/// Median and 99th percentile of one stage (ms).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Percentiles {
    fn of(mut us: Vec<u64>) -> Self {
        us.sort_unstable();
        let at = |q: f64| {
            us.get(((us.len().saturating_sub(1)) as f64 * q).round() as usize)
                .map_or(0.0, |&v| v as f64 / 1e3)
        };
        Self { p50_ms: at(0.5), p99_ms: at(0.99) }
    }
}

/// Per-stage latency of a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageLatency {
    /// Waiting for the frame and decoding it (for a camera, mostly waiting).
    pub capture: Percentiles,
    /// Preprocessing and inference.
    pub inspect: Percentiles,
    /// Scored result waiting for the station thread.
    pub queue: Percentiles,
    /// Decision and scheduling on the station thread.
    pub decide: Percentiles,
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Counters at the end.
    pub counters: Counters,
    /// Rising edges on the reject output.
    pub pulses_fired: u64,
    /// Parts that passed uninspected because frames came faster than inference
    /// (counted in `counters.uninspected` too).
    pub overruns: u64,
    /// Parts judged NG or not inspected that were not pushed off (decided too late, or
    /// the policy stopped the line instead): each one is a failure of the run.
    pub unpushed: u64,
    /// Parts whose ground truth was known.
    pub with_truth: u64,
    /// Of those, handled correctly: a defective one judged NG and pushed, a good one
    /// judged OK.
    pub correct: u64,
    /// Capture → decision latency, median (ms).
    pub latency_p50_ms: f64,
    /// Capture → decision latency, 99th percentile (ms).
    pub latency_p99_ms: f64,
    /// Where that latency goes, for parts that were captured and scored.
    pub stages: StageLatency,
    /// Wall time of the run (s).
    pub seconds: f64,
    /// Whether the run permit was on at the end.
    pub run_permit: bool,
    /// What held the line stopped at the end.
    pub alarms: Vec<String>,
}

/// What the line lets the outside see and do: the diagnostics link and the daemon's
/// log implement it, tests pass a closure. The line does not know who is listening.
pub trait Hooks<P: OutputPin, C: Clock> {
    /// A part was decided.
    fn decided(&mut self, r: &PartResult);

    /// The station thread is between two wake-ups (at least every millisecond): the one
    /// moment the outside may read or change the station. `overruns` so far.
    fn between(&mut self, station: &mut Station<P, C>, overruns: u64) {
        let _ = (station, overruns);
    }
}

impl<P: OutputPin, C: Clock, F: FnMut(&PartResult)> Hooks<P, C> for F {
    fn decided(&mut self, r: &PartResult) {
        self(r)
    }
}

/// A line: where parts come from, what scores them, its clock, when to stop.
#[derive(Debug)]
pub struct Line<S, I, C> {
    /// Frames (camera, folder, generator), triggered or paced.
    pub source: S,
    /// The model.
    pub inspector: I,
    /// The line's clock, shared with the station.
    pub clock: C,
    /// When to stop by itself.
    pub limits: RunLimits,
    /// Back-off while the camera is lost.
    pub retry: Retry,
    /// Set to stop (signal, link restart).
    pub stop: Arc<AtomicBool>,
}

/// What the worker tells the station thread, in order.
#[derive(Debug)]
enum Report {
    /// One part: when it passed the camera, the inspection, its stage timings when scored.
    Part(u64, Inspected, Option<WorkerTimes>),
    /// The model in force, announced at the start and whenever it changes.
    Model(ModelState),
    /// The camera went down (why) or came back (`None`).
    Camera(Option<String>),
}

/// What the station must know of the model in force.
#[derive(Debug, Clone, PartialEq)]
struct ModelState {
    threshold: f32,
    latency_p99_us: Option<u64>,
    missing: Option<String>,
}

impl ModelState {
    fn of(inspector: &impl Inspector) -> Self {
        Self {
            threshold: inspector.threshold(),
            latency_p99_us: inspector.latency_p99_us(),
            missing: inspector.missing(),
        }
    }

    /// Equal for the station (NaN thresholds of two missing models included).
    fn same(&self, other: &Self) -> bool {
        self.threshold.to_bits() == other.threshold.to_bits()
            && self.latency_p99_us == other.latency_p99_us
            && self.missing == other.missing
    }
}

impl<S, I, C> Line<S, I, C>
where
    S: FrameSource + Send + 'static,
    I: Inspector + Send + 'static,
    C: Clock + Clone + Send + 'static,
{
    /// Run until the limits, the source's end or a stop: a worker thread captures and
    /// scores, this thread decides with `station` and keeps its pulses on time. Paced
    /// sources are timed from the start of the run.
    pub fn run<P: OutputPin>(self, station: &mut Station<P, C>, hooks: &mut impl Hooks<P, C>) -> Summary {
        let (tx, rx) = mpsc::sync_channel::<Report>(4);
        let overruns = Arc::new(AtomicU64::new(0));
        let clock = self.clock.clone();
        let model = ModelState::of(&self.inspector);
        // The station starts with the threshold in force (a saved one, maybe): only a
        // model that arrives later brings its own.
        apply_model(station, &ModelState { threshold: f32::NAN, ..model.clone() });
        let worker = Worker {
            model,
            backoff: self.retry.first_ms,
            camera: CameraState::Unknown,
            line: self,
            tx,
            overruns: Arc::clone(&overruns),
            slots: 0,
            parts: 0,
        };
        let worker = std::thread::spawn(move || worker.run());
        let started = clock.now_us();
        let mut tally = Tally::default();
        let mut worker_done = false;
        loop {
            if worker_done {
                // Only pulses are left: sleep to each.
                if let Some(d) = station.next_deadline() {
                    clock.sleep_until(d);
                }
            } else {
                // Wake for the next pulse edge or at least every millisecond.
                let wait = station
                    .next_deadline()
                    .map_or(1_000, |d| d.saturating_sub(clock.now_us()).min(1_000))
                    .max(50);
                match rx.recv_timeout(Duration::from_micros(wait)) {
                    Ok(Report::Part(passed, part, times)) => {
                        let received = clock.now_us();
                        let mut r = station.decide(passed, part);
                        r.inspect_us = times.map(|t| t.inspect_us);
                        tally.add(&r, times, received, clock.now_us());
                        hooks.decided(&r);
                    }
                    Ok(Report::Model(m)) => apply_model(station, &m),
                    Ok(Report::Camera(Some(why))) => station.raise(Alarm::CameraDown(why)),
                    Ok(Report::Camera(None)) => station.clear(|a| matches!(a, Alarm::CameraDown(_))),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => worker_done = true,
                }
            }
            hooks.between(station, overruns.load(Ordering::Relaxed));
            match station.tick() {
                Ok(edges) => tally.pulses += edges.iter().filter(|e| e.high).count() as u64,
                Err(_) => tracing::error!("reject output failed to switch"),
            }
            if worker_done && station.next_deadline().is_none() {
                break;
            }
        }
        let _ = worker.join();
        tally.summary(station, overruns.load(Ordering::Relaxed), (clock.now_us() - started) as f64 / 1e6)
    }
}

/// Tell the station about the model in force: its threshold, its latency against the
/// belt delay, and whether there is one at all.
fn apply_model<P: OutputPin, C: Clock>(station: &mut Station<P, C>, m: &ModelState) {
    if m.threshold.is_finite() && m.threshold.to_bits() != station.threshold().to_bits() {
        station.set_threshold(m.threshold);
    }
    station.set_latency(m.latency_p99_us);
    match &m.missing {
        Some(why) => station.raise(Alarm::NoModel(why.clone())),
        None => station.clear(|a| matches!(a, Alarm::NoModel(_))),
    }
}

/// Whether the camera delivers, as far as the worker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CameraState {
    /// No frame asked for yet.
    Unknown,
    /// The last frame came.
    Up,
    /// Lost; reported to the station.
    Down,
}

/// The worker thread: captures and scores parts in order and sends each to the station.
struct Worker<S, I, C> {
    line: Line<S, I, C>,
    tx: mpsc::SyncSender<Report>,
    overruns: Arc<AtomicU64>,
    /// The model state last announced.
    model: ModelState,
    /// Current camera back-off (ms).
    backoff: f64,
    camera: CameraState,
    /// Frame slots so far (parts, lost or not); an idle trigger wait is not one.
    slots: u64,
    /// Parts sent to the station so far: the next part's number.
    parts: u64,
}

impl<S: FrameSource, I: Inspector, C: Clock> Worker<S, I, C> {
    fn run(mut self) {
        let interval = self.line.source.interval_us();
        let origin = self.line.clock.now_us();
        loop {
            if self.line.stop.load(Ordering::Relaxed)
                || self.line.limits.parts.is_some_and(|n| self.slots >= n)
            {
                return;
            }
            self.line.inspector.refresh();
            if !self.announce_model() {
                return;
            }
            if let Some(iv) = interval {
                let due = origin + self.slots * iv;
                let now = self.line.clock.now_us();
                if due > now {
                    self.line.clock.sleep_until(due);
                } else if now - due >= iv {
                    // Overrun: the belt did not wait, this part passed the camera at `due`
                    // while the previous one was being scored; the pusher times from then.
                    let truth = self.line.source.skip();
                    self.slots += 1;
                    if !self.overrun(due, truth) {
                        return;
                    }
                    continue;
                }
            }
            if !self.next_part() {
                return;
            }
        }
    }

    /// Send the model state when it changed; `false` when the station is gone.
    fn announce_model(&mut self) -> bool {
        let now = ModelState::of(&self.line.inspector);
        if now.same(&self.model) {
            return true;
        }
        self.model = now.clone();
        self.tx.send(Report::Model(now)).is_ok()
    }

    /// Capture, score and send one part; `false` when the line is over.
    fn next_part(&mut self) -> bool {
        let clock = &self.line.clock;
        let asked = clock.now_us();
        let frame = self.line.source.next_frame();
        let captured = clock.now_us();
        // The pusher times from when the part passed the photo-eye, when known.
        let edge = self.line.source.arrived_us();
        let passed = edge.unwrap_or(captured);
        if !matches!(frame, Err(FrameError::Idle)) {
            self.slots += 1;
        }
        // Parts the camera dropped while inspection was behind: each is uninspected.
        for _ in 0..frame.as_ref().map_or(0, |f| f.dropped_before) {
            if !self.overrun(captured, None) {
                return false;
            }
        }
        match &frame {
            Err(FrameError::End(_)) => return false,
            Err(FrameError::Idle) => return true,
            Err(e @ FrameError::Lost { .. }) => return self.camera_lost(e.to_string(), edge, frame),
            _ => {
                self.backoff = self.line.retry.first_ms;
                if self.camera == CameraState::Down && self.tx.send(Report::Camera(None)).is_err() {
                    return false;
                }
                self.camera = CameraState::Up;
            }
        }
        if edge.is_none() && self.line.inspector.missing().is_some() {
            // Free-running with no model: the line is held stopped, the frame shows no
            // new part.
            return true;
        }
        let n = self.number();
        let part = inspect(&mut self.line.inspector, n, frame);
        let scored_at_us = self.line.clock.now_us();
        let times =
            WorkerTimes { capture_us: captured - asked, inspect_us: scored_at_us - captured, scored_at_us };
        self.announce_model() && self.tx.send(Report::Part(passed, part, Some(times))).is_ok()
    }

    /// The camera gave no frame (`why`). A part whose photo-eye edge came (`edge`) is
    /// uninspected, and so is the one in front of a free-running camera that was
    /// delivering until now; while it stays down, a free-running camera shows no parts
    /// (the alarm holds the line stopped). Then wait before retrying.
    fn camera_lost(
        &mut self,
        why: String,
        edge: Option<u64>,
        frame: Result<crate::camera::Frame, FrameError>,
    ) -> bool {
        let passed = edge.unwrap_or_else(|| self.line.clock.now_us());
        if edge.is_some() || self.camera == CameraState::Up {
            let n = self.number();
            let part = inspect(&mut self.line.inspector, n, frame);
            if self.tx.send(Report::Part(passed, part, None)).is_err() {
                return false;
            }
        }
        if self.camera != CameraState::Down {
            self.camera = CameraState::Down;
            if self.tx.send(Report::Camera(Some(why))).is_err() {
                return false;
            }
        }
        self.pause((self.backoff * 1e3) as u64);
        self.backoff = (self.backoff * 2.0).min(self.line.retry.max_ms);
        true
    }

    /// Wait `us` (the camera back-off), waking every 50 ms at most so that a stop (SIGTERM,
    /// a restart over the link) is taken at once, not after a back-off of up to seconds.
    fn pause(&self, us: u64) {
        let clock = &self.line.clock;
        let until = clock.now_us() + us;
        while !self.line.stop.load(Ordering::Relaxed) && clock.now_us() < until {
            clock.sleep_until(until.min(clock.now_us() + 50_000));
        }
    }

    /// Send an uninspected overrun part that passed the camera at `passed`.
    fn overrun(&mut self, passed: u64, truth: Option<bool>) -> bool {
        self.overruns.fetch_add(1, Ordering::Relaxed);
        let part = Inspected { part: self.number(), truth, score: Err(Fault::Overrun), thumbnail: None };
        self.tx.send(Report::Part(passed, part, None)).is_ok()
    }

    fn number(&mut self) -> u64 {
        self.parts += 1;
        self.parts - 1
    }
}

/// What the station thread measures over a run.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<u64>,
    capture: Vec<u64>,
    inspect: Vec<u64>,
    queue: Vec<u64>,
    decide: Vec<u64>,
    pulses: u64,
    unpushed: u64,
    with_truth: u64,
    correct: u64,
}

impl Tally {
    /// Part `r`, received from the worker at `received` and decided by `decided`.
    fn add(&mut self, r: &PartResult, times: Option<WorkerTimes>, received: u64, decided: u64) {
        if let Some(t) = times {
            self.capture.push(t.capture_us);
            self.inspect.push(t.inspect_us);
            self.queue.push(received.saturating_sub(t.scored_at_us));
            self.decide.push(decided - received);
        }
        self.latencies.push(r.decided_us.saturating_sub(r.captured_us));
        let judged_ng = r.verdict != kensa_shared::verdict::Verdict::Ok;
        let pushed = matches!(r.action, Action::Reject(Outcome::Scheduled { .. } | Outcome::Merged { .. }));
        self.unpushed += u64::from(judged_ng && !pushed);
        if let Some(t) = r.truth {
            self.with_truth += 1;
            self.correct += u64::from(if t { judged_ng && pushed } else { !judged_ng });
        }
    }

    fn summary<P: OutputPin, C: Clock>(
        self,
        station: &Station<P, C>,
        overruns: u64,
        seconds: f64,
    ) -> Summary {
        let stages = StageLatency {
            capture: Percentiles::of(self.capture),
            inspect: Percentiles::of(self.inspect),
            queue: Percentiles::of(self.queue),
            decide: Percentiles::of(self.decide),
        };
        let total = Percentiles::of(self.latencies);
        Summary {
            counters: Counters { overruns, ..station.counters() },
            pulses_fired: self.pulses,
            overruns,
            unpushed: self.unpushed,
            with_truth: self.with_truth,
            correct: self.correct,
            latency_p50_ms: total.p50_ms,
            latency_p99_ms: total.p99_ms,
            stages,
            seconds,
            run_permit: station.run_permit(),
            alarms: station.alarms().iter().map(ToString::to_string).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::{Pusher, SimPin};
    use crate::camera::SyntheticConveyor;
    use crate::clock::ManualClock;
    use crate::config::Uninspected;
    use crate::schedule::{BeltTiming, RejectScheduler};
    use kensa_shared::synth::{Surface, SynthSpec};

    /// Takes 25 ms of the test's clock per part; every part scores OK.
    struct Slow(ManualClock);

    impl Inspector for Slow {
        fn score(&mut self, _: &image::DynamicImage) -> Result<f32, String> {
            self.0.advance(25_000);
            Ok(0.0)
        }

        fn threshold(&self) -> f32 {
            1.0
        }
    }

    #[test]
    fn parts_arriving_faster_than_inference_are_rejected_on_time_not_lost() {
        let clock = ManualClock::default();
        clock.set(1_000_000);
        let timing = BeltTiming { delay_us: 300_000, width_us: 2_000, min_gap_us: 1_000, lead_us: 0 };
        let pin = SimPin::new(clock.clone());
        let edges = pin.log();
        let pusher = Pusher::new(pin, false).unwrap();
        let mut station =
            Station::new(1.0, pusher, RejectScheduler::new(timing), clock.clone(), Uninspected::Reject);
        // A part every 5 ms against 25 ms per inspection: one part in five is inspected.
        let source = SyntheticConveyor::new(SynthSpec::square(Surface::Fabric, 32), 200.0, 0.3, 1);
        let limits = RunLimits { parts: Some(30) };
        let retry = Retry { first_ms: 1.0, max_ms: 1.0 };
        let mut results = Vec::new();
        let line = Line {
            source,
            inspector: Slow(clock.clone()),
            clock: clock.clone(),
            limits,
            retry,
            stop: Arc::default(),
        };
        let s = line.run(&mut station, &mut |r: &PartResult| results.push(r.clone()));

        let c = s.counters;
        assert_eq!(c.parts, 30, "every part on the belt is accounted for");
        let inspected: Vec<u64> = results.iter().filter(|r| r.fault.is_none()).map(|r| r.part).collect();
        assert_eq!(inspected, [0, 5, 10, 15, 20, 25]);
        assert_eq!((s.overruns, c.uninspected, c.ok), (24, 24, 6));
        assert_eq!(c.rejects, 24, "the reject policy pushes every uninspected part");
        assert_eq!(c.late, 0);
        // Each skipped part keeps the generator's truth and is pushed when it, not the
        // part being scored, reaches the pusher: 5 ms per part after the start.
        let mut truth = SyntheticConveyor::new(SynthSpec::square(Surface::Fabric, 32), 200.0, 0.3, 1);
        let mut expected_rises = Vec::new();
        for r in &results {
            assert_eq!(r.truth, truth.skip(), "truth of part {}", r.part);
            let passed_camera = 1_000_000 + 5_000 * r.part;
            assert_eq!(r.captured_us, passed_camera, "part {}", r.part);
            if r.fault.is_some() {
                assert_eq!(r.fault, Some(Fault::Overrun));
                expected_rises.push(passed_camera + 300_000);
            }
        }
        let rises: Vec<u64> = edges.lock().unwrap().iter().filter(|e| e.1).map(|e| e.0).collect();
        assert_eq!(rises, expected_rises, "one pulse per uninspected part, at its delay");
        assert_eq!(s.pulses_fired, 24);
        // Stage timing sees the inspector's 25 ms, and only for parts it scored.
        assert_eq!(s.stages.inspect.p50_ms, 25.0, "{:?}", s.stages);
    }

    /// Scores every part NG.
    struct AllNg;

    impl Inspector for AllNg {
        fn score(&mut self, _: &image::DynamicImage) -> Result<f32, String> {
            Ok(2.0)
        }

        fn threshold(&self) -> f32 {
            1.0
        }
    }

    /// A camera whose first capture takes 1.9 s of the test's clock (opening the device).
    struct SlowToOpen {
        inner: SyntheticConveyor,
        clock: ManualClock,
        opened: bool,
    }

    impl FrameSource for SlowToOpen {
        fn next_frame(&mut self) -> Result<crate::camera::Frame, FrameError> {
            if !std::mem::replace(&mut self.opened, true) {
                self.clock.advance(1_900_000);
            }
            self.inner.next_frame()
        }
        fn interval_us(&self) -> Option<u64> {
            None
        }
        fn describe(&self) -> String {
            "slow camera".into()
        }
        fn flush(&mut self) {}
        fn arrived_us(&self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn triggered_parts_are_pushed_at_their_photo_eye_edge_plus_the_delay_however_slow_the_capture() {
        let clock = ManualClock::default();
        clock.set(1_000_000);
        let timing = BeltTiming { delay_us: 3_000_000, width_us: 2_000, min_gap_us: 1_000, lead_us: 0 };
        let pin = SimPin::new(clock.clone());
        let edges = pin.log();
        let pusher = Pusher::new(pin, false).unwrap();
        let mut station =
            Station::new(1.0, pusher, RejectScheduler::new(timing), clock.clone(), Uninspected::Reject);
        let inner = SyntheticConveyor::new(SynthSpec::square(Surface::Fabric, 32), 1.0, 0.0, 1);
        let camera = SlowToOpen { inner, clock: clock.clone(), opened: false };
        let (tx, rx) = mpsc::channel();
        let photo_eye = [1_000_000, 1_100_000, 1_200_000];
        for t in photo_eye {
            tx.send(t).unwrap();
        }
        let source = crate::camera::Triggered::new(camera, rx, Duration::from_millis(50), "photo-eye".into());
        let retry = Retry { first_ms: 1.0, max_ms: 1.0 };
        let mut results = Vec::new();
        let limits = RunLimits { parts: Some(3) };
        let line =
            Line { source, inspector: AllNg, clock: clock.clone(), limits, retry, stop: Arc::default() };
        let s = line.run(&mut station, &mut |r: &PartResult| results.push(r.clone()));
        assert_eq!((s.counters.ng, s.counters.late), (3, 0), "{:?}", s.counters);
        let passed: Vec<u64> = results.iter().map(|r| r.captured_us).collect();
        assert_eq!(passed, photo_eye, "each part is timed from its edge, not from its capture");
        let rises: Vec<u64> = edges.lock().unwrap().iter().filter(|e| e.1).map(|e| e.0).collect();
        assert_eq!(rises, photo_eye.map(|t| t + 3_000_000), "pulses at edge + delay");
    }

    /// A camera that is always unplugged.
    struct Unplugged;

    impl FrameSource for Unplugged {
        fn next_frame(&mut self) -> Result<crate::camera::Frame, FrameError> {
            Err(FrameError::Lost { device: "/dev/video9".into(), reason: "No such device".into() })
        }
        fn interval_us(&self) -> Option<u64> {
            None
        }
        fn describe(&self) -> String {
            "unplugged camera".into()
        }
        fn flush(&mut self) {}
        fn arrived_us(&self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn a_stop_is_taken_during_a_long_camera_back_off() {
        use crate::clock::MonotonicClock;
        let clock = MonotonicClock::default();
        let timing = BeltTiming { delay_us: 300_000, width_us: 2_000, min_gap_us: 1_000, lead_us: 0 };
        let pusher = Pusher::new(SimPin::new(clock), false).unwrap();
        let mut station = Station::new(1.0, pusher, RejectScheduler::new(timing), clock, Uninspected::Reject);
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            stopper.store(true, Ordering::Relaxed);
        });
        // A minute between retries: without waking for the stop, the run would last it.
        let retry = Retry { first_ms: 60_000.0, max_ms: 60_000.0 };
        let line =
            Line { source: Unplugged, inspector: AllNg, clock, limits: RunLimits::default(), retry, stop };
        let started = std::time::Instant::now();
        let s = line.run(&mut station, &mut |_: &PartResult| {});
        assert!(started.elapsed() < Duration::from_secs(5), "stopped after {:?}", started.elapsed());
        // A free-running camera that never delivered shows no parts: nothing is pushed,
        // the alarm holds the line stopped.
        assert_eq!((s.counters.parts, s.pulses_fired), (0, 0));
        assert!(
            matches!(station.alarms(), [Alarm::CameraDown(m)] if m.contains("/dev/video9")),
            "{:?}",
            station.alarms()
        );
        assert!(!station.run_permit());
    }
}
