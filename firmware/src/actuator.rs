//! The pusher: any `embedded_hal::digital::OutputPin`, driven by the reject scheduler.
//!
//! On the board the pin is a `linux_embedded_hal::CdevPin`; without hardware it is a
//! [`SimPin`] that records every level change with the time it happened, which is what
//! the simulation prints and what tests check pulses against.

use std::sync::{Arc, Mutex};

use embedded_hal::digital::{ErrorType, OutputPin};

use crate::clock::Clock;
use crate::schedule::{Edge, RejectScheduler};

/// Switch an output on or off, honouring its polarity.
fn drive<P: OutputPin>(pin: &mut P, on: bool, active_low: bool) -> Result<(), P::Error> {
    if on != active_low { pin.set_high() } else { pin.set_low() }
}

/// The reject output: a pin plus its polarity.
#[derive(Debug)]
pub struct Pusher<P> {
    pin: P,
    active_low: bool,
    out: bool,
}

impl<P: OutputPin> Pusher<P> {
    /// Take `pin` and drive it to "retracted".
    pub fn new(pin: P, active_low: bool) -> Result<Self, P::Error> {
        let mut p = Self { pin, active_low, out: true };
        p.set(false)?;
        Ok(p)
    }

    /// Pusher out (`true`) or retracted.
    pub fn set(&mut self, out: bool) -> Result<(), P::Error> {
        if out == self.out {
            return Ok(());
        }
        drive(&mut self.pin, out, self.active_low)?;
        self.out = out;
        Ok(())
    }

    /// Whether the pusher is out.
    pub fn is_out(&self) -> bool {
        self.out
    }

    /// Apply every edge the scheduler has due at `now_us`; returns them.
    pub fn drive(&mut self, sched: &mut RejectScheduler, now_us: u64) -> Result<Vec<Edge>, P::Error> {
        let edges = sched.poll(now_us);
        for e in &edges {
            self.set(e.high)?;
        }
        Ok(edges)
    }
}

/// A steady output (the line-stop relay): raised and lowered, never pulsed. Object-safe,
/// so the station can hold any pin type without another type parameter.
pub trait Signal: Send {
    /// Drive the output to `on` (honouring its polarity).
    fn set(&mut self, on: bool) -> Result<(), String>;
}

/// An [`OutputPin`] as a [`Signal`].
#[derive(Debug)]
pub struct PinSignal<P> {
    pin: P,
    active_low: bool,
}

impl<P: OutputPin + Send> PinSignal<P> {
    /// Take `pin` and drive it to "off".
    pub fn new(pin: P, active_low: bool) -> Result<Self, P::Error> {
        let mut s = Self { pin, active_low };
        s.drive(false)?;
        Ok(s)
    }

    fn drive(&mut self, on: bool) -> Result<(), P::Error> {
        drive(&mut self.pin, on, self.active_low)
    }
}

impl<P: OutputPin + Send> Signal for PinSignal<P> {
    fn set(&mut self, on: bool) -> Result<(), String> {
        self.drive(on).map_err(|e| format!("{e:?}"))
    }
}

/// A steady output with no hardware: each change goes to the log (nothing is kept, so a
/// heartbeat can run for ever).
#[derive(Debug)]
pub struct LoggedSignal<C> {
    name: String,
    clock: C,
}

impl<C> LoggedSignal<C> {
    /// The simulated output `name`.
    pub fn new(name: &str, clock: C) -> Self {
        Self { name: name.to_string(), clock }
    }
}

impl<C: Clock + Send> Signal for LoggedSignal<C> {
    fn set(&mut self, on: bool) -> Result<(), String> {
        tracing::debug!("{} {} at {} us", self.name, if on { "on" } else { "off" }, self.clock.now_us());
        Ok(())
    }
}

/// A pin with no hardware: records `(time µs, level)` of every change.
#[derive(Debug, Clone)]
pub struct SimPin<C> {
    clock: C,
    log: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl<C: Clock> SimPin<C> {
    /// A low pin reading time from `clock`.
    pub fn new(clock: C) -> Self {
        Self { clock, log: Arc::default() }
    }

    /// A handle on the recorded edges (shared with clones of the pin).
    pub fn log(&self) -> Arc<Mutex<Vec<(u64, bool)>>> {
        Arc::clone(&self.log)
    }

    fn record(&mut self, level: bool) {
        let t = self.clock.now_us();
        self.log.lock().expect("edge log poisoned").push((t, level));
    }
}

impl<C> ErrorType for SimPin<C> {
    type Error = std::convert::Infallible;
}

impl<C: Clock> OutputPin for SimPin<C> {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.record(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.record(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::schedule::BeltTiming;

    #[test]
    fn pulses_reach_the_pin_at_delay_within_a_millisecond() {
        let clock = ManualClock::default();
        let pin = SimPin::new(clock.clone());
        let log = pin.log();
        let mut pusher = Pusher::new(pin, false).unwrap();
        let timing = BeltTiming { delay_us: 300_000, width_us: 50_000, min_gap_us: 20_000, lead_us: 1_000 };
        let mut sched = RejectScheduler::new(timing);
        // Parts captured every 120 ms; parts 1, 2 and 5 are NG, decided 70 ms after capture.
        let ng = [120_000u64, 240_000, 600_000];
        // The loop wakes every 500 µs, as the daemon's would at worst; decisions land in
        // between, so several parts are in flight while earlier pulses fire.
        while clock.now_us() < 1_200_000 {
            clock.advance(500);
            let now = clock.now_us();
            for &cap in ng.iter().filter(|&&c| c + 70_000 == now) {
                sched.reject(cap, now);
            }
            pusher.drive(&mut sched, now).unwrap();
        }
        let edges = log.lock().unwrap().clone();
        assert_eq!(edges[0], (0, false), "pin starts retracted");
        let rising: Vec<u64> = edges.iter().filter(|e| e.1).map(|e| e.0).collect();
        let falling: Vec<u64> = edges[1..].iter().filter(|e| !e.1).map(|e| e.0).collect();
        assert_eq!(rising.len(), 3, "{edges:?}");
        for ((r, f), cap) in rising.iter().zip(&falling).zip(ng) {
            assert!(r.abs_diff(cap + 300_000) <= 1_000, "pulse for part at {cap} rose at {r}");
            assert!(f.abs_diff(cap + 350_000) <= 1_000, "pulse for part at {cap} fell at {f}");
        }
        assert!(!pusher.is_out());
    }

    #[test]
    fn active_low_inverts_the_line() {
        let clock = ManualClock::default();
        let pin = SimPin::new(clock.clone());
        let log = pin.log();
        let mut p = Pusher::new(pin, true).unwrap();
        p.set(true).unwrap();
        p.set(true).unwrap(); // no change, no edge
        p.set(false).unwrap();
        assert_eq!(*log.lock().unwrap(), vec![(0, true), (0, false), (0, true)]);
    }
}
