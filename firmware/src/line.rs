//! Running the line: a worker thread captures and scores frames while the calling thread
//! owns the station, so reject pulses stay on time however long inference takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use embedded_hal::digital::OutputPin;

use crate::camera::{FrameError, FrameSource};
use crate::clock::Clock;
use crate::link::Control;
use crate::station::{Inspected, Inspector, PartResult, Station, inspect};

/// Fault text of a part that passed while inspection was behind.
pub const OVERRUN: &str = "overrun: the part passed while the previous one was being inspected";

/// When to stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunLimits {
    /// Stop after this many parts (`None`: until the source ends or a stop is asked).
    pub parts: Option<u64>,
}

/// Camera-loss retry: first delay and cap (ms).
#[derive(Debug, Clone, Copy)]
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
    /// Station counters at the end.
    pub counters: crate::station::Counters,
    /// Rising edges on the reject output.
    pub pulses_fired: u64,
    /// Parts that passed uninspected because frames came faster than inference
    /// (counted in `counters.uninspected` too).
    pub overruns: u64,
    /// Parts whose ground truth was known.
    pub with_truth: u64,
    /// Of those, judged correctly (NG for defective, OK for good).
    pub correct: u64,
    /// Capture → decision latency, median (ms).
    pub latency_p50_ms: f64,
    /// Capture → decision latency, 99th percentile (ms).
    pub latency_p99_ms: f64,
    /// Where that latency goes, for parts that were captured and scored.
    pub stages: StageLatency,
    /// Wall time of the run (s).
    pub seconds: f64,
}

/// Run `source` through `inspector` and `station` until `limits` or `stop`; `on_part` sees
/// every decision as it is made. Paced sources are timed from the start of the run.
#[allow(clippy::too_many_arguments)] // each is a distinct part of the line; a struct would only rename them
pub fn run<S, I, P, C>(
    mut source: S,
    mut inspector: I,
    station: &mut Station<P, C>,
    clock: C,
    limits: RunLimits,
    retry: Retry,
    stop: Arc<AtomicBool>,
    control: Option<&Control>,
    mut on_part: impl FnMut(&PartResult),
) -> Summary
where
    S: FrameSource + Send + 'static,
    I: Inspector + Send + 'static,
    P: OutputPin,
    C: Clock + Clone + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel::<(u64, Inspected, Option<WorkerTimes>)>(4);
    // A new model (swapped in by the inspector) brings its threshold, announced ahead of
    // the first part it scored.
    let (threshold_tx, threshold_rx) = mpsc::channel::<f32>();
    let worker_stop = Arc::clone(&stop);
    let overruns = Arc::new(AtomicU64::new(0));
    let worker_overruns = Arc::clone(&overruns);
    let worker_clock = clock.clone();
    let worker = std::thread::spawn(move || {
        let clock = worker_clock;
        let interval = source.interval_us();
        let origin = clock.now_us();
        let mut threshold = inspector.threshold();
        let mut backoff = retry.first_ms;
        // Counts frame slots (parts, lost or not); an idle trigger wait is not one.
        let mut seq = 0u64;
        // Numbers every part sent to the station, frames the camera dropped included.
        let mut next_part = {
            let mut n = 0u64;
            move || {
                n += 1;
                n - 1
            }
        };
        loop {
            if worker_stop.load(Ordering::Relaxed) || limits.parts.is_some_and(|n| seq >= n) {
                break;
            }
            if let Some(iv) = interval {
                let due = origin + seq * iv;
                let now = clock.now_us();
                if due > now {
                    clock.sleep_until(due);
                } else if now - due >= iv {
                    // Overrun: the belt did not wait, this part passed the camera at `due`
                    // while the previous one was being scored; the pusher times from then.
                    let truth = source.skip();
                    seq += 1;
                    worker_overruns.fetch_add(1, Ordering::Relaxed);
                    let part = next_part();
                    let part = Inspected { part, truth, score: Err(OVERRUN.into()), thumbnail: None };
                    if tx.send((due, part, None)).is_err() {
                        break;
                    }
                    continue;
                }
            }
            let asked = clock.now_us();
            let frame = source.next_frame();
            let captured = clock.now_us();
            // The pusher times from when the part passed the photo-eye, when known.
            let passed = source.arrived_us().unwrap_or(captured);
            if !matches!(frame, Err(FrameError::Idle)) {
                seq += 1;
            }
            // Parts the camera dropped while inspection was behind: each is uninspected.
            let dropped = frame.as_ref().map_or(0, |f| f.dropped_before);
            for _ in 0..dropped {
                worker_overruns.fetch_add(1, Ordering::Relaxed);
                let part = next_part();
                let part = Inspected { part, truth: None, score: Err(OVERRUN.into()), thumbnail: None };
                if tx.send((captured, part, None)).is_err() {
                    return;
                }
            }
            match &frame {
                Err(FrameError::End(_)) => break,
                Err(FrameError::Idle) => continue,
                Err(FrameError::Lost { .. }) => {
                    // The part in front of the camera is uninspected; wait before retrying.
                    let part = inspect(&mut inspector, next_part(), frame);
                    if tx.send((passed, part, None)).is_err() {
                        break;
                    }
                    clock.sleep_until(clock.now_us() + (backoff * 1e3) as u64);
                    backoff = (backoff * 2.0).min(retry.max_ms);
                    continue;
                }
                _ => backoff = retry.first_ms,
            }
            let part = inspect(&mut inspector, next_part(), frame);
            let scored_at_us = clock.now_us();
            let times = WorkerTimes {
                capture_us: captured - asked,
                inspect_us: scored_at_us - captured,
                scored_at_us,
            };
            if inspector.threshold().to_bits() != threshold.to_bits() {
                threshold = inspector.threshold();
                let _ = threshold_tx.send(threshold);
            }
            if tx.send((passed, part, Some(times))).is_err() {
                break;
            }
        }
    });

    let started = clock.now_us();
    let mut latencies = Vec::new();
    let (mut capture, mut inspect_t, mut queue, mut decide_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pulses, mut with_truth, mut correct) = (0u64, 0u64, 0u64);
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
                Ok((passed, part, times)) => {
                    while let Ok(t) = threshold_rx.try_recv() {
                        station.set_threshold(t);
                    }
                    let received = clock.now_us();
                    let r = station.decide(passed, part);
                    if let Some(t) = times {
                        capture.push(t.capture_us);
                        inspect_t.push(t.inspect_us);
                        queue.push(received.saturating_sub(t.scored_at_us));
                        decide_t.push(clock.now_us() - received);
                    }
                    latencies.push(r.decided_us.saturating_sub(r.captured_us));
                    if let Some(t) = r.truth {
                        with_truth += 1;
                        let judged_ng = r.verdict != kensa_shared::verdict::Verdict::Ok;
                        correct += u64::from(judged_ng == t);
                    }
                    if let Some(c) = control {
                        c.publish(&r);
                    }
                    on_part(&r);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => worker_done = true,
            }
        }
        if let Some(c) = control {
            c.serve(station, &overruns);
        }
        match station.tick() {
            Ok(edges) => pulses += edges.iter().filter(|e| e.high).count() as u64,
            Err(_) => tracing::error!("reject output failed to switch"),
        }
        if worker_done && station.next_deadline().is_none() {
            break;
        }
    }
    let _ = worker.join();
    let stages = StageLatency {
        capture: Percentiles::of(capture),
        inspect: Percentiles::of(inspect_t),
        queue: Percentiles::of(queue),
        decide: Percentiles::of(decide_t),
    };
    let total = Percentiles::of(latencies);
    Summary {
        counters: station.counters(),
        pulses_fired: pulses,
        overruns: overruns.load(Ordering::Relaxed),
        with_truth,
        correct,
        latency_p50_ms: total.p50_ms,
        latency_p99_ms: total.p99_ms,
        stages,
        seconds: (clock.now_us() - started) as f64 / 1e6,
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
        let s = run(
            source,
            Slow(clock.clone()),
            &mut station,
            clock.clone(),
            limits,
            retry,
            Arc::default(),
            None,
            |r: &PartResult| results.push(r.clone()),
        );

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
                assert_eq!(r.fault.as_deref(), Some(OVERRUN));
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
        let s = run(
            source,
            AllNg,
            &mut station,
            clock.clone(),
            RunLimits { parts: Some(3) },
            retry,
            Arc::default(),
            None,
            |r: &PartResult| results.push(r.clone()),
        );
        assert_eq!((s.counters.ng, s.counters.late), (3, 0), "{:?}", s.counters);
        let passed: Vec<u64> = results.iter().map(|r| r.captured_us).collect();
        assert_eq!(passed, photo_eye, "each part is timed from its edge, not from its capture");
        let rises: Vec<u64> = edges.lock().unwrap().iter().filter(|e| e.1).map(|e| e.0).collect();
        assert_eq!(rises, photo_eye.map(|t| t + 3_000_000), "pulses at edge + delay");
    }
}
