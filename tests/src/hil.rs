//! Judging a hardware-in-the-loop run: what the pusher line did against what each part
//! should have caused.
//!
//! The VM stage (`tests/vm/`) raises a real GPIO trigger line for every part and records
//! the edges the daemon drove on the real pusher line. Each part has a window in which
//! its pulse must start: from `delay` after its trigger (the daemon schedules the pulse
//! at capture + delay, and capture follows the trigger) to `delay + slack` (the trigger's
//! way through the kernel and the camera's next frame). This module is pure so the rule
//! itself is unit-tested, including that it fails when the line is not driven.

use image::GrayImage;
use kensa_shared::synth::{Surface, SynthSpec, generate};
use serde::{Deserialize, Serialize};

/// Seeds (above `0x4117_0000`) of the good and the debris parts the conveyor shows. They
/// are the demo model's kind of part (brushed metal), picked for a clear verdict:
/// `tests/tests/e2e/hil.rs` checks the demo model scores each good one at least 4.5 %
/// below its threshold (its good parts cluster within 10 % of it) and each debris one
/// 15 % above, so a verdict in the VM never rests on a borderline score.
const GOOD: [u64; 5] = [16, 21, 13, 1, 23];
const DEBRIS: [u64; 5] = [0, 25, 6, 18, 21];

/// The conveyor's part number `index`: a generated `size`² part, with one piece of
/// debris when it must be pushed.
pub fn part(size: u32, index: u64, want: Expect) -> GrayImage {
    let spec = SynthSpec::square(Surface::BrushedMetal, size);
    let seeds = if want == Expect::Push { &DEBRIS } else { &GOOD };
    let seed = 0x4117_0000 + seeds[index as usize % seeds.len()];
    generate(&spec, seed, want == Expect::Push).image
}

/// A grey image as packed YUYV (`Y0 U Y1 V`): its luma, neutral chroma.
pub fn yuyv(image: &GrayImage) -> Vec<u8> {
    image.as_raw().chunks_exact(2).flat_map(|y| [y[0], 128, y[1], 128]).collect()
}

/// What a part must cause on the pusher line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// Judged OK in time: no pulse.
    Pass,
    /// Judged NG, or not inspected: one pulse.
    Push,
    /// Either (a camera image nobody can predict), but no more than one pulse.
    Any,
}

impl std::str::FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pass" => Ok(Self::Pass),
            "push" => Ok(Self::Push),
            "any" => Ok(Self::Any),
            other => Err(format!("unknown expectation {other:?} (pass, push, any)")),
        }
    }
}

/// A level change seen on an output line, in µs since the run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// When it was seen.
    pub at_us: u64,
    /// The new level.
    pub high: bool,
}

/// The timing rule of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// The daemon's configured capture → pusher delay.
    pub delay_us: u64,
    /// How much later than `trigger + delay` a pulse may start.
    pub slack_us: u64,
}

/// Every rule the run broke, one sentence each; empty when the line did what the parts
/// needed: a pulse in each `Push` part's window, none in a `Pass` part's, at most one
/// per window, and no pulse outside every window (a stroke at nothing).
pub fn judge(triggers_us: &[u64], expect: &[Expect], pusher: &[Edge], timing: Timing) -> Vec<String> {
    let mut faults = Vec::new();
    if triggers_us.len() != expect.len() {
        faults.push(format!("{} triggers for {} expected parts", triggers_us.len(), expect.len()));
        return faults;
    }
    let rising: Vec<u64> = rising_edges(pusher);
    let window = |t: u64| (t + timing.delay_us, t + timing.delay_us + timing.slack_us);
    for (i, (&t, &want)) in triggers_us.iter().zip(expect).enumerate() {
        let (from, to) = window(t);
        let pulses = rising.iter().filter(|&&r| (from..=to).contains(&r)).count();
        let ms = |us: u64| us as f64 / 1000.0;
        let (lo, hi) = (ms(from), ms(to));
        match (want, pulses) {
            (Expect::Push, 0) => {
                faults.push(format!("part {i}: no pusher pulse between {lo:.0} and {hi:.0} ms"))
            }
            (Expect::Pass, n) if n > 0 => {
                faults.push(format!("part {i}: judged OK but pushed between {lo:.0} and {hi:.0} ms"))
            }
            (_, n) if n > 1 => faults.push(format!("part {i}: {n} pulses between {lo:.0} and {hi:.0} ms")),
            _ => {}
        }
    }
    for &r in &rising {
        if !triggers_us.iter().any(|&t| (window(t).0..=window(t).1).contains(&r)) {
            faults.push(format!("a pusher pulse at {:.0} ms belongs to no part", r as f64 / 1000.0));
        }
    }
    if pusher.last().is_some_and(|e| e.high) {
        faults.push("the pusher was left out at the end of the run".into());
    }
    faults
}

/// The times the line went high.
pub fn rising_edges(edges: &[Edge]) -> Vec<u64> {
    edges.iter().filter(|e| e.high).map(|e| e.at_us).collect()
}

/// What the run-permit line must show when a part's photo-eye fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permit {
    /// On: the box lets the line run.
    On,
    /// Off: the box holds the line stopped.
    Off,
    /// Either.
    Any,
}

impl std::str::FromStr for Permit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "any" => Ok(Self::Any),
            _ => Err(format!("`{s}`: expected on, off or any")),
        }
    }
}

/// The level of a line at `t` from its recorded changes (resting low).
pub fn level_at(edges: &[Edge], t: u64) -> bool {
    edges.iter().take_while(|e| e.at_us <= t).last().is_some_and(|e| e.high)
}

/// Each part whose run-permit level at its trigger is not the expected one.
pub fn judge_permit(triggers: &[u64], expected: &[Permit], permit: &[Edge]) -> Vec<String> {
    triggers
        .iter()
        .zip(expected)
        .enumerate()
        .filter_map(|(i, (&t, &want))| {
            let on = level_at(permit, t);
            match (want, on) {
                (Permit::On, false) => {
                    Some(format!("part {i}: run permit off at its trigger ({} ms)", t / 1000))
                }
                (Permit::Off, true) => {
                    Some(format!("part {i}: run permit on at its trigger ({} ms)", t / 1000))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing { delay_us: 5_000_000, slack_us: 1_000_000 };

    fn pulse(at_ms: u64) -> [Edge; 2] {
        [Edge { at_us: at_ms * 1000, high: true }, Edge { at_us: (at_ms + 60) * 1000, high: false }]
    }

    fn triggers() -> Vec<u64> {
        vec![0, 8_000_000, 16_000_000]
    }

    #[test]
    fn pulses_for_exactly_the_ng_parts_pass() {
        let edges: Vec<Edge> = pulse(13_300).into_iter().collect();
        let want = [Expect::Pass, Expect::Push, Expect::Any];
        assert!(judge(&triggers(), &want, &edges, T).is_empty());
    }

    #[test]
    fn an_undriven_pusher_fails() {
        let want = [Expect::Pass, Expect::Push, Expect::Push];
        let faults = judge(&triggers(), &want, &[], T);
        assert_eq!(faults.len(), 2, "{faults:?}");
        assert!(faults[0].starts_with("part 1: no pusher pulse"), "{faults:?}");
    }

    #[test]
    fn a_pushed_good_part_a_double_stroke_and_a_stroke_at_nothing_fail() {
        let mut edges: Vec<Edge> = pulse(5_200).into_iter().collect();
        edges.extend(pulse(13_100));
        edges.extend(pulse(13_500));
        edges.extend(pulse(30_000));
        let want = [Expect::Pass, Expect::Push, Expect::Any];
        let faults = judge(&triggers(), &want, &edges, T);
        assert_eq!(faults.len(), 3, "{faults:?}");
        assert!(faults[0].contains("judged OK but pushed"));
        assert!(faults[1].contains("2 pulses"));
        assert!(faults[2].contains("30000 ms belongs to no part"));
    }

    #[test]
    fn a_pulse_before_the_delay_or_after_the_slack_is_not_the_parts() {
        for at in [12_900, 14_100] {
            let edges: Vec<Edge> = pulse(at).into_iter().collect();
            let faults = judge(&triggers(), &[Expect::Any, Expect::Push, Expect::Any], &edges, T);
            assert_eq!(faults.len(), 2, "{at}: {faults:?}");
        }
    }

    #[test]
    fn a_pusher_left_out_fails() {
        let edges = [Edge { at_us: 13_200_000, high: true }];
        let faults = judge(&triggers(), &[Expect::Any, Expect::Push, Expect::Any], &edges, T);
        assert_eq!(faults, ["the pusher was left out at the end of the run"]);
    }

    #[test]
    fn the_run_permit_is_judged_at_each_trigger() {
        let permit = [Edge { at_us: 1_000, high: true }, Edge { at_us: 25_000, high: false }];
        let triggers = [10_000, 20_000, 30_000];
        assert!(judge_permit(&triggers, &[Permit::On, Permit::Any, Permit::Off], &permit).is_empty());
        let faults = judge_permit(&triggers, &[Permit::Off, Permit::On, Permit::On], &permit);
        assert_eq!(faults.len(), 2, "{faults:?}");
        assert!(faults[0].contains("part 0: run permit on") && faults[1].contains("part 2: run permit off"));
    }
}
