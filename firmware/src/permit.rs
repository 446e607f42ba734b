//! The run permit (line-OK): the output the line controller needs before it may run the
//! belt. It is energised only while the box is fit to judge every part in time and is
//! off otherwise, so the safe state is the one a dead box leaves behind: a crashed or
//! stopped daemon releases its GPIO line (wired with a pull-down: off), and the
//! supervisor holds it off while no daemon runs.
//!
//! A hung daemon keeps its line at whatever level it had. For that case the permit can
//! be a heartbeat: it toggles every `heartbeat_ms` while on, and a watchdog relay (a
//! retriggerable timer, the usual industrial part) drops the belt when the toggling
//! stops. Pure: driven through [`Signal`] at times the station gives.

use crate::actuator::Signal;

/// How the permit shows "on".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitMode {
    /// A steady level: on while permitted.
    Steady,
    /// A square wave with this half-period (µs) while permitted, steady off otherwise.
    Heartbeat {
        /// Time between two toggles (µs).
        half_period_us: u64,
    },
}

/// The run-permit output and its state.
pub struct RunPermit {
    output: Box<dyn Signal>,
    mode: PermitMode,
    /// Whether the line may run.
    granted: bool,
    /// The level driven now.
    level: bool,
    /// When the heartbeat toggles next (µs).
    next_toggle_us: u64,
}

impl std::fmt::Debug for RunPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunPermit")
            .field("mode", &self.mode)
            .field("granted", &self.granted)
            .field("level", &self.level)
            .finish()
    }
}

impl RunPermit {
    /// A permit on `output`, off until granted.
    pub fn new(mut output: Box<dyn Signal>, mode: PermitMode) -> Self {
        if let Err(e) = output.set(false) {
            tracing::error!("run-permit output failed to switch off: {e}");
        }
        Self { output, mode, granted: false, level: false, next_toggle_us: 0 }
    }

    /// Grant (`true`) or withdraw the permit at `now_us`. Withdrawing drives the output
    /// off at once.
    pub fn set(&mut self, granted: bool, now_us: u64) {
        if granted == self.granted {
            return;
        }
        self.granted = granted;
        self.next_toggle_us = now_us;
        self.drive(granted);
        if let PermitMode::Heartbeat { half_period_us } = self.mode {
            self.next_toggle_us = now_us + half_period_us;
        }
    }

    /// Whether the line may run.
    pub fn granted(&self) -> bool {
        self.granted
    }

    /// Toggle the heartbeat when due (call often, at least every millisecond).
    pub fn tick(&mut self, now_us: u64) {
        if let PermitMode::Heartbeat { half_period_us } = self.mode
            && self.granted
            && now_us >= self.next_toggle_us
        {
            self.drive(!self.level);
            self.next_toggle_us = now_us + half_period_us;
        }
    }

    fn drive(&mut self, level: bool) {
        if level == self.level {
            return;
        }
        match self.output.set(level) {
            Ok(()) => self.level = level,
            Err(e) => tracing::error!(
                "run-permit output failed to switch {}: {e}",
                if level { "on" } else { "off" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::{PinSignal, SimPin};
    use crate::clock::{Clock, ManualClock};

    fn levels(pin: &SimPin<ManualClock>) -> Vec<(u64, bool)> {
        pin.log().lock().unwrap().clone()
    }

    #[test]
    fn a_steady_permit_is_off_until_granted_and_drops_at_once() {
        let clock = ManualClock::default();
        let pin = SimPin::new(clock.clone());
        let mut p = RunPermit::new(Box::new(PinSignal::new(pin.clone(), false).unwrap()), PermitMode::Steady);
        clock.set(10);
        p.set(true, clock.now_us());
        for t in (10..1_000).step_by(100) {
            p.tick(t);
        }
        clock.set(2_000);
        p.set(false, clock.now_us());
        assert_eq!(levels(&pin)[1..], [(0, false), (10, true), (2_000, false)]);
        assert!(!p.granted());
    }

    #[test]
    fn a_heartbeat_permit_toggles_only_while_granted() {
        let clock = ManualClock::default();
        let pin = SimPin::new(clock.clone());
        let mode = PermitMode::Heartbeat { half_period_us: 100 };
        let mut p = RunPermit::new(Box::new(PinSignal::new(pin.clone(), false).unwrap()), mode);
        p.set(true, 0);
        for t in 1..=350 {
            clock.set(t);
            p.tick(t);
        }
        p.set(false, 350);
        for t in 351..=800 {
            clock.set(t);
            p.tick(t);
        }
        // On at 0, toggled at 100, 200, 300, off at 350 and silent after.
        let edges: Vec<u64> = levels(&pin).iter().skip(2).map(|e| e.0).collect();
        assert_eq!(edges, [0, 100, 200, 300]);
        assert!(!levels(&pin).last().unwrap().1, "off after the permit is withdrawn");
    }
}
