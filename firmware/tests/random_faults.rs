//! Thousands of parts through the line with faults injected at random: stalls of the
//! box, slow and corrupt frames, a camera that drops out, model errors and NaN scores.
//! For every part that was not judged OK, the physical record (the pusher pin's edges,
//! the run-permit pin's level) must show that it was pushed on time or that the line
//! was stopped by the time the box knew it could not be.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use image::DynamicImage;
use kensa_fw::actuator::{PinSignal, Pusher, SimPin};
use kensa_fw::camera::{Frame, FrameError, FrameSource};
use kensa_fw::clock::{Clock, ManualClock};
use kensa_fw::config::Uninspected;
use kensa_fw::line::{Hooks, Line, Retry, RunLimits};
use kensa_fw::permit::{PermitMode, RunPermit};
use kensa_fw::schedule::{BeltTiming, Outcome, RejectScheduler};
use kensa_fw::station::{Action, Inspector, PartResult, Station};
use kensa_shared::verdict::Verdict;

/// xorshift64*: reproducible without a dependency.
#[derive(Clone)]
struct Rng(Arc<Mutex<u64>>);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(seed.max(1))))
    }

    /// Uniform in [0, 1).
    fn next(&self) -> f64 {
        let mut s = self.0.lock().unwrap();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Move the shared clock by `us` in small steps, giving the station's thread time to
/// act within each, as a real clock would; a stall is one jump instead.
fn walk(clock: &ManualClock, us: u64) {
    for _ in 0..us / 2_000 {
        clock.advance(2_000);
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
    clock.advance(us % 2_000);
}

const DELAY_US: u64 = 300_000;
const WIDTH_US: u64 = 20_000;

/// A free-running camera over a belt: frames whose grey level is the part's truth
/// (bright = debris), sometimes slow, corrupt, or not there for a while.
struct FaultyCamera {
    clock: ManualClock,
    rng: Rng,
    seq: u64,
    /// Frames left until the camera is back.
    down_for: u32,
}

impl FrameSource for FaultyCamera {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let r = self.rng.next();
        // 30 ms between parts, more when the frame is slow to come.
        walk(&self.clock, 30_000);
        if r < 0.01 {
            self.clock.advance(400_000); // an oversized frame, a slow decode
        }
        if self.down_for == 0 && r > 0.995 {
            self.down_for = 1 + (self.rng.next() * 20.0) as u32;
        }
        if self.down_for > 0 {
            self.down_for -= 1;
            return Err(FrameError::Lost { device: "/dev/video0".into(), reason: "unplugged".into() });
        }
        self.seq += 1;
        if r < 0.03 {
            return Err(FrameError::Corrupt {
                seq: self.seq,
                origin: "cam".into(),
                reason: "truncated".into(),
            });
        }
        let debris = self.rng.next() < 0.2;
        let grey = if debris { 200 } else { 50 };
        Ok(Frame {
            seq: self.seq,
            image: DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([grey]))),
            truth: Some(debris),
            origin: "cam".into(),
            dropped_before: 0,
        })
    }
    fn interval_us(&self) -> Option<u64> {
        None
    }
    fn describe(&self) -> String {
        "faulty camera".into()
    }
    fn flush(&mut self) {}
    fn arrived_us(&self) -> Option<u64> {
        None
    }
}

/// Scores by grey level (threshold 100); sometimes slow, sometimes stalled past the
/// pusher, sometimes failing or NaN.
struct FaultyModel {
    clock: ManualClock,
    rng: Rng,
}

impl Inspector for FaultyModel {
    fn score(&mut self, image: &DynamicImage) -> Result<f32, String> {
        let r = self.rng.next();
        walk(&self.clock, 10_000 + (self.rng.next() * 20_000.0) as u64);
        if r < 0.02 {
            self.clock.advance(DELAY_US + 50_000); // the box stalls past the pusher
        }
        if r > 0.99 {
            return Err("tensor shape mismatch".into());
        }
        if (0.98..0.985).contains(&r) {
            return Ok(f32::NAN);
        }
        Ok(image.to_luma8()[(0, 0)][0] as f32)
    }
    fn threshold(&self) -> f32 {
        100.0
    }
}

/// Records every decision; a technician clears a latched stop some parts after it.
struct Technician {
    results: Vec<PartResult>,
    rng: Rng,
    /// Parts decided while the line was stopped.
    while_stopped: u32,
    clock: ManualClock,
    /// When the last part was decided: a technician takes a moment to look.
    last_decided_us: u64,
}

impl Hooks<SimPin<ManualClock>, ManualClock> for Technician {
    fn decided(&mut self, r: &PartResult) {
        self.results.push(r.clone());
        self.while_stopped += 1;
        self.last_decided_us = r.decided_us;
    }
    fn between(&mut self, station: &mut Station<SimPin<ManualClock>, ManualClock>, _: u64) {
        if station.run_permit() {
            self.while_stopped = 0;
        } else if self.while_stopped > 5 + (self.rng.next() * 20.0) as u32
            && self.clock.now_us() > self.last_decided_us + 5_000
        {
            station.clear_line_stop();
            self.while_stopped = 0;
        }
    }
}

/// The pin's level at `t` (its last change at or before `t`).
fn level_at(log: &[(u64, bool)], t: u64) -> bool {
    log.iter().take_while(|e| e.0 <= t).last().is_some_and(|e| e.1)
}

/// Whether the line was stopped when the box knew, at `t`: the permit was off, or went
/// off within the same step of the station. The worker moves the shared test clock
/// while the station acts (by up to one slow frame), so "the same step" spans that.
fn stopped_by(log: &[(u64, bool)], t: u64) -> bool {
    !level_at(log, t.saturating_sub(1))
        || !level_at(log, t)
        || log.iter().any(|e| !e.1 && e.0 >= t && e.0 <= t + 500_000)
}

fn run(seed: u64, policy: Uninspected) {
    let clock = ManualClock::default();
    clock.set(1_000_000);
    let rng = Rng::new(seed);
    let timing = BeltTiming { delay_us: DELAY_US, width_us: WIDTH_US, min_gap_us: 5_000, lead_us: 1_000 };
    let pusher_pin = SimPin::new(clock.clone());
    let permit_pin = SimPin::new(clock.clone());
    let permit =
        RunPermit::new(Box::new(PinSignal::new(permit_pin.clone(), false).unwrap()), PermitMode::Steady);
    let mut station = Station::new(
        100.0,
        Pusher::new(pusher_pin.clone(), false).unwrap(),
        RejectScheduler::new(timing),
        clock.clone(),
        policy,
    )
    .with_run_permit(permit);
    let source = FaultyCamera { clock: clock.clone(), rng: rng.clone(), seq: 0, down_for: 0 };
    let inspector = FaultyModel { clock: clock.clone(), rng: rng.clone() };
    let line = Line {
        source,
        inspector,
        clock: clock.clone(),
        limits: RunLimits { parts: Some(2_000) },
        retry: Retry { first_ms: 5.0, max_ms: 20.0 },
        stop: Arc::new(AtomicBool::new(false)),
    };
    let mut tech =
        Technician { results: Vec::new(), rng, while_stopped: 0, clock: clock.clone(), last_decided_us: 0 };
    let summary = line.run(&mut station, &mut tech);
    let pusher_log = pusher_pin.log().lock().unwrap().clone();
    let rises: Vec<u64> = pusher_log.iter().filter(|e| e.1).map(|e| e.0).collect();
    let permit_log = permit_pin.log().lock().unwrap().clone();

    let (mut pushed, mut stopped) = (0, 0);
    for r in tech.results.iter().filter(|r| r.verdict != Verdict::Ok) {
        let on_time = |at: u64| {
            rises.iter().find(|&&t| t >= at.saturating_sub(WIDTH_US)).is_some_and(|&t| t <= at + WIDTH_US / 2)
        };
        match r.action {
            Action::Reject(Outcome::Scheduled { at_us } | Outcome::Merged { at_us }) if on_time(at_us) => {
                pushed += 1
            }
            Action::Reject(Outcome::Scheduled { at_us } | Outcome::Merged { at_us }) => {
                // The stroke came too late (the box stalled): the line stopped as it fired.
                let fired = rises.iter().copied().find(|&t| t >= at_us).expect("a stroke was planned");
                assert!(
                    stopped_by(&permit_log, fired),
                    "seed {seed}: part {} pushed late at {fired} with the line running: {r:?}",
                    r.part
                );
                stopped += 1;
            }
            Action::StopLine | Action::Reject(Outcome::Late { .. }) => {
                assert!(
                    stopped_by(&permit_log, r.decided_us),
                    "seed {seed}: part {} not pushed and the line running: {r:?}",
                    r.part
                );
                stopped += 1;
            }
            Action::Pass => panic!("seed {seed}: part {} judged {} and passed: {r:?}", r.part, r.verdict),
        }
    }
    let must_leave = tech.results.iter().filter(|r| r.verdict != Verdict::Ok).count();
    assert_eq!(pushed + stopped, must_leave);
    eprintln!(
        "seed {seed}: {} parts, {pushed} pushed on time, {stopped} with the line stopped, {:?}",
        tech.results.len(),
        summary.counters
    );
    // The run met every kind of fault, and both outcomes.
    assert!(tech.results.len() > 1_800, "seed {seed}: {} parts", tech.results.len());
    assert!(pushed > 100 && stopped > 10, "seed {seed}: {pushed} pushed, {stopped} stopped");
    assert!(
        summary.counters.late > 0 && summary.counters.uninspected > 0,
        "seed {seed}: {:?}",
        summary.counters
    );
    assert!(summary.counters.line_stops > 10, "seed {seed}: the technician cleared stops that came back");
}

#[test]
fn every_part_not_judged_ok_in_time_is_pushed_or_the_line_is_stopped() {
    for seed in [1, 2, 3] {
        run(seed, Uninspected::Reject);
    }
    run(4, Uninspected::StopLine);
}
