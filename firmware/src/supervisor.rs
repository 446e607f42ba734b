//! Firmware supervision: `kensa-fw --supervise` runs the daemon as a child process,
//! starts freshly flashed firmware on trial, and returns to the previous firmware when
//! the new one does not report healthy in time.
//!
//! The supervisor is the installed `kensa-fw` itself and is never replaced over the link:
//! whatever a flashed binary does, the supervisor is still there to start the last good
//! one. A child is healthy once it has scored a part (model loaded, camera delivering,
//! decisions made) and says so by creating the file named in [`ENV_HEALTH`]. A child
//! reads its stdin only to notice that the supervisor is gone (end of file), so that no
//! daemon outlives its supervisor and two never drive the same outputs.
//!
//! The trial marker is taken (cleared durably) before the trial starts: a power cut during
//! a trial brings the box back on the previous firmware, never into a second trial.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use kensa_shared::wire::FirmwareState;

use crate::clock::Clock;
use crate::store::{Slot, Store};

/// Exit code of a daemon that wants to be started again (into flashed firmware).
pub const RESTART_EXIT: u8 = 75;
/// File a supervised daemon creates once healthy.
pub const ENV_HEALTH: &str = "KENSA_FW_HEALTH";
/// Which firmware a supervised daemon is: `a`, `b` or `installed`.
pub const ENV_SLOT: &str = "KENSA_FW_SLOT";
/// `1` while a supervised daemon is on trial.
pub const ENV_TRIAL: &str = "KENSA_FW_TRIAL";
/// The firmware file the supervisor started (what `Info` hashes).
pub const ENV_IMAGE: &str = "KENSA_FW_IMAGE";

/// Which firmware a daemon runs: the one the box was installed with, or a flashed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FirmwareImage {
    /// The executable the box was set up with; always there to fall back to.
    Installed,
    /// A flashed firmware in the store.
    Slot(Slot),
}

impl FirmwareImage {
    /// `installed`, `a` or `b`, as the environment and the log spell it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "installed" => Some(Self::Installed),
            other => Slot::parse(other).map(Self::Slot),
        }
    }
}

impl std::fmt::Display for FirmwareImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Installed => f.pad("installed"),
            Self::Slot(s) => s.fmt(f),
        }
    }
}

impl From<Slot> for FirmwareImage {
    fn from(s: Slot) -> Self {
        Self::Slot(s)
    }
}

/// A firmware to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// Which one.
    pub slot: FirmwareImage,
    /// The executable.
    pub path: PathBuf,
    /// Started on trial: made active only once healthy.
    pub trial: bool,
}

/// How a daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it (its number).
    Signal(i32),
}

impl Exit {
    /// Whether it ended as asked (0) or to be started again ([`RESTART_EXIT`]).
    fn orderly(self) -> bool {
        matches!(self, Exit::Code(0)) || self == Exit::Code(i32::from(RESTART_EXIT))
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(n) => {
                let name = match n {
                    1 => "SIGHUP",
                    2 => "SIGINT",
                    4 => "SIGILL",
                    6 => "SIGABRT",
                    7 => "SIGBUS",
                    8 => "SIGFPE",
                    9 => "SIGKILL",
                    11 => "SIGSEGV",
                    13 => "SIGPIPE",
                    15 => "SIGTERM",
                    _ => "signal",
                };
                write!(f, "was killed by signal {n} ({name})")
            }
        }
    }
}

/// A running daemon.
pub trait Child {
    /// How it ended, once it has.
    fn exited(&mut self) -> Option<Exit>;
    /// Whether it has reported healthy.
    fn healthy(&mut self) -> bool;
    /// Ask it to stop; kill it if it has not within a grace period.
    fn stop(&mut self);
}

/// Starts daemons.
pub trait Launcher {
    /// The running daemon.
    type Child: Child;
    /// Start `firmware`.
    fn start(&mut self, firmware: &Firmware) -> std::io::Result<Self::Child>;

    /// No daemon runs (it exited, or has not started yet): hold the line's outputs safe.
    fn idle(&mut self) {}
}

/// What happened, for the log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A daemon started.
    Started(Firmware),
    /// A trial firmware reported healthy and is now the active one.
    Promoted(FirmwareImage),
    /// A trial firmware failed; the previous one runs again.
    RolledBack {
        /// The failed slot.
        slot: FirmwareImage,
        /// Why.
        why: String,
    },
    /// A daemon exited by itself.
    Exited {
        /// Its slot.
        slot: FirmwareImage,
        /// How.
        exit: Exit,
    },
    /// A daemon could not be started.
    StartFailed {
        /// Its slot.
        slot: FirmwareImage,
        /// Why.
        why: String,
    },
}

/// Looks after the box's daemon.
#[derive(Debug)]
pub struct Supervisor<L, C> {
    store: Store,
    installed: PathBuf,
    launcher: L,
    clock: C,
    /// How long a trial firmware has to report healthy.
    pub health_timeout_us: u64,
    /// Wait before restarting a daemon that exited on its own (doubles up to 30 s).
    pub backoff_us: u64,
    /// Least time a trial firmware runs, healthy, before it is promoted.
    pub trial_min_us: u64,
    /// A promoted firmware that fails [`CRASH_LOOP`] times within this long after its
    /// promotion goes back to the firmware before it.
    pub crash_window_us: u64,
}

/// Failures within [`Supervisor::crash_window_us`] that count as a crash loop.
pub const CRASH_LOOP: usize = 3;

/// A firmware promoted in this session: when, and what ran before it.
#[derive(Debug, Clone, Copy)]
struct Promotion {
    slot: crate::store::Slot,
    at_us: u64,
    before: Option<crate::store::Slot>,
    failures: usize,
}

const POLL_US: u64 = 100_000;
const MAX_BACKOFF_US: u64 = 30_000_000;

impl<L: Launcher, C: Clock> Supervisor<L, C> {
    /// Supervise daemons from the firmware `store`; `installed` is the firmware the box
    /// was set up with, run while nothing flashed is active.
    pub fn new(store: Store, installed: PathBuf, launcher: L, clock: C, health_timeout_us: u64) -> Self {
        Self {
            store,
            installed,
            launcher,
            clock,
            health_timeout_us,
            backoff_us: 1_000_000,
            trial_min_us: 0,
            crash_window_us: 600_000_000,
        }
    }

    fn installed(&self) -> Firmware {
        Firmware { slot: FirmwareImage::Installed, path: self.installed.clone(), trial: false }
    }

    /// The firmware to start now: a pending trial, else the active slot, else the
    /// installed one.
    fn next(&self) -> Firmware {
        match self.store.take_trial() {
            Ok(Some((slot, path))) => return Firmware { slot: slot.into(), path, trial: true },
            Ok(None) => {}
            Err(e) => tracing::error!("firmware store: {e}"),
        }
        match self.store.active_slot() {
            Some((slot, path)) => Firmware { slot: slot.into(), path, trial: false },
            None => self.installed(),
        }
    }

    /// Start, watch and restart daemons until `stop`.
    pub fn run(&mut self, stop: &AtomicBool, mut on_event: impl FnMut(&Event)) {
        let mut backoff = self.backoff_us;
        let mut fallback = false;
        let mut promoted: Option<Promotion> = None;
        self.launcher.idle();
        while !stop.load(Ordering::Relaxed) {
            let firmware = if std::mem::take(&mut fallback) { self.installed() } else { self.next() };
            let mut child = match self.launcher.start(&firmware) {
                Ok(c) => c,
                Err(e) => {
                    self.launcher.idle();
                    let why = e.to_string();
                    on_event(&Event::StartFailed { slot: firmware.slot, why: why.clone() });
                    if firmware.trial {
                        on_event(&Event::RolledBack { slot: firmware.slot, why });
                    } else if firmware.slot != FirmwareImage::Installed {
                        fallback = true;
                    } else {
                        self.pause(stop, &mut backoff);
                    }
                    continue;
                }
            };
            on_event(&Event::Started(firmware.clone()));
            let started = self.clock.now_us();
            let mut on_trial = firmware.trial;
            loop {
                if stop.load(Ordering::Relaxed) {
                    child.stop();
                    self.launcher.idle();
                    return;
                }
                if let Some(exit) = child.exited() {
                    self.launcher.idle();
                    if on_trial {
                        let why = format!("{exit} before its trial ended");
                        on_event(&Event::RolledBack { slot: firmware.slot, why });
                    } else {
                        on_event(&Event::Exited { slot: firmware.slot, exit });
                        if !exit.orderly() && self.crash_looped(&mut promoted, firmware.slot, &mut on_event) {
                            backoff = self.backoff_us;
                            break;
                        }
                        if self.clock.now_us() - started > 2 * MAX_BACKOFF_US {
                            backoff = self.backoff_us;
                        }
                        if exit != Exit::Code(i32::from(RESTART_EXIT)) {
                            self.pause(stop, &mut backoff);
                        }
                    }
                    break;
                }
                if on_trial {
                    let ran = self.clock.now_us() - started;
                    if child.healthy() && ran >= self.trial_min_us {
                        let before = self.store.active_slot().map(|(s, _)| s);
                        let done = match firmware.slot {
                            FirmwareImage::Slot(slot) => self.store.promote(slot).map(|()| {
                                promoted =
                                    Some(Promotion { slot, at_us: self.clock.now_us(), before, failures: 0 });
                            }),
                            FirmwareImage::Installed => Ok(()), // never on trial
                        };
                        match done {
                            Ok(()) => on_event(&Event::Promoted(firmware.slot)),
                            Err(e) => tracing::error!("firmware store: {e}"),
                        }
                        on_trial = false;
                    } else if ran > self.health_timeout_us.max(self.trial_min_us) {
                        child.stop();
                        self.launcher.idle();
                        let why = format!(
                            "did not report healthy within {:.0} s",
                            self.health_timeout_us.max(self.trial_min_us) as f64 / 1e6
                        );
                        on_event(&Event::RolledBack { slot: firmware.slot, why });
                        break;
                    }
                }
                let now = self.clock.now_us();
                self.clock.sleep_until(now + POLL_US);
            }
        }
    }

    /// A failure of `slot`: when it is the firmware promoted in this session and has now
    /// failed [`CRASH_LOOP`] times within the window after its promotion, make the
    /// firmware before it active again and say so.
    fn crash_looped(
        &mut self,
        promoted: &mut Option<Promotion>,
        slot: FirmwareImage,
        on_event: &mut impl FnMut(&Event),
    ) -> bool {
        let Some(p) = promoted.as_mut().filter(|p| FirmwareImage::Slot(p.slot) == slot) else { return false };
        if self.clock.now_us() - p.at_us > self.crash_window_us {
            return false;
        }
        p.failures += 1;
        if p.failures < CRASH_LOOP {
            return false;
        }
        let back = match p.before {
            Some(before) => self.store.promote(before),
            None => self.store.clear_active(),
        };
        if let Err(e) = back {
            tracing::error!("firmware store: {e}");
            return false;
        }
        let why = format!(
            "failed {CRASH_LOOP} times within {:.0} s of its promotion",
            self.crash_window_us as f64 / 1e6
        );
        on_event(&Event::RolledBack { slot, why });
        *promoted = None;
        true
    }

    fn pause(&self, stop: &AtomicBool, backoff: &mut u64) {
        let until = self.clock.now_us() + *backoff;
        while !stop.load(Ordering::Relaxed) && self.clock.now_us() < until {
            let now = self.clock.now_us();
            self.clock.sleep_until((now + POLL_US).min(until));
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF_US);
    }
}

/// The firmware store inside a box's store folder.
pub fn firmware_dir(store: &Path) -> PathBuf {
    store.join("firmware")
}

/// Accept a binary for this box only if it is an executable for the same machine as the
/// running one (an x86 build flashed to an ARM box would never start).
pub fn check_binary(binary: &[u8], running: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\x7fELF";
    if binary.len() < 20 || &binary[..4] != MAGIC {
        return Err("not an ELF executable".into());
    }
    let machine = |b: &[u8]| (b[4], b[5], u16::from_le_bytes([b[18], b[19]]));
    if running.len() < 20 || &running[..4] != MAGIC {
        return Err("cannot read the running executable's header".into());
    }
    let (got, want) = (machine(binary), machine(running));
    if got != want {
        return Err(format!(
            "built for another machine (ELF class {}, machine {:#x}; this box is class {}, machine {:#x})",
            got.0, got.2, want.0, want.2
        ));
    }
    Ok(())
}

/// How a supervised daemon finds out about itself (from its environment).
#[derive(Debug, Clone)]
pub struct Supervised {
    /// What it runs.
    pub slot: FirmwareImage,
    /// Started on trial.
    pub trial: bool,
    /// File to create once healthy.
    pub health: PathBuf,
    /// The firmware file started.
    pub image: Option<PathBuf>,
}

impl Supervised {
    /// `Some` when started by a supervisor.
    pub fn from_env() -> Option<Self> {
        Some(Self {
            slot: FirmwareImage::parse(&std::env::var(ENV_SLOT).ok()?)?,
            trial: std::env::var(ENV_TRIAL).is_ok_and(|t| t == "1"),
            health: std::env::var_os(ENV_HEALTH)?.into(),
            image: std::env::var_os(ENV_IMAGE).map(PathBuf::from),
        })
    }

    /// Committed, or still on trial (the supervisor promotes a trial by making its slot
    /// active in `store`).
    pub fn state(&self, store: &Store) -> FirmwareState {
        let promoted = store.active_slot().is_some_and(|(s, _)| FirmwareImage::Slot(s) == self.slot);
        if self.trial && !promoted { FirmwareState::Trial } else { FirmwareState::Committed }
    }

    /// Tell the supervisor this daemon is healthy.
    pub fn report_healthy(&self) {
        if let Err(e) = std::fs::write(&self.health, b"healthy\n") {
            tracing::error!("cannot report healthy through {}: {e}", self.health.display());
        }
    }
}

/// An output the supervisor holds off while no daemon runs (the run permit), and lets
/// go before starting one, which then claims it.
pub trait HoldOff: Send {
    /// Claim the output and drive it off.
    fn hold(&mut self);
    /// Let it go.
    fn release(&mut self);
}

/// Real daemons: child processes with the supervisor's own arguments.
pub struct Processes {
    /// Arguments passed to every daemon.
    pub args: Vec<OsString>,
    /// The health file.
    pub health: PathBuf,
    /// The run permit, held off between daemons.
    pub hold: Option<Box<dyn HoldOff>>,
}

impl std::fmt::Debug for Processes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processes").field("args", &self.args).field("health", &self.health).finish()
    }
}

/// A daemon process.
#[derive(Debug)]
pub struct Process {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    health: PathBuf,
}

impl Launcher for Processes {
    type Child = Process;

    fn start(&mut self, firmware: &Firmware) -> std::io::Result<Process> {
        if let Some(h) = &mut self.hold {
            h.release();
        }
        let _ = std::fs::remove_file(&self.health);
        let mut child = Command::new(&firmware.path)
            .args(&self.args)
            .env(ENV_HEALTH, &self.health)
            .env(ENV_SLOT, firmware.slot.to_string())
            .env(ENV_TRIAL, if firmware.trial { "1" } else { "0" })
            .env(ENV_IMAGE, &firmware.path)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", firmware.path.display())))?;
        let stdin = child.stdin.take();
        Ok(Process { child, stdin, health: self.health.clone() })
    }

    fn idle(&mut self) {
        if let Some(h) = &mut self.hold {
            h.hold();
        }
    }
}

impl Child for Process {
    fn exited(&mut self) -> Option<Exit> {
        use std::os::unix::process::ExitStatusExt;
        match self.child.try_wait() {
            Ok(Some(status)) => {
                Some(status.code().map_or(Exit::Signal(status.signal().unwrap_or(0)), Exit::Code))
            }
            Ok(None) => None,
            Err(_) => Some(Exit::Signal(0)),
        }
    }

    fn healthy(&mut self) -> bool {
        self.health.is_file()
    }

    fn stop(&mut self) {
        // End of file on its stdin: the daemon stops as on SIGTERM.
        self.stdin = None;
        for _ in 0..50 {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        tracing::warn!("daemon {} did not stop in 5 s: killing it", self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::Holds;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// A scripted daemon: healthy from `healthy_at`, exits at `exit_at` (µs after start).
    #[derive(Clone, Copy)]
    struct Script {
        healthy_at: Option<u64>,
        exit_at: Option<(u64, i32)>,
    }

    /// Simulated time the tests supervise for.
    const BUDGET_US: u64 = 60_000_000;

    struct Fake {
        clock: ManualClock,
        started: u64,
        script: Script,
        stopped: Rc<RefCell<Vec<String>>>,
        slot: String,
        stop: Rc<AtomicBool>,
    }

    impl Child for Fake {
        fn exited(&mut self) -> Option<Exit> {
            if self.clock.now_us() >= BUDGET_US {
                self.stop.store(true, Ordering::Relaxed);
            }
            let t = self.clock.now_us() - self.started;
            self.script.exit_at.filter(|(at, _)| t >= *at).map(|(_, code)| Exit::Code(code))
        }

        fn healthy(&mut self) -> bool {
            self.script.healthy_at.is_some_and(|at| self.clock.now_us() - self.started >= at)
        }

        fn stop(&mut self) {
            self.stopped.borrow_mut().push(self.slot.clone());
        }
    }

    /// Runs the script of the slot it is asked for; the `n`-th start of a slot takes its
    /// `n`-th script (the last one repeats).
    struct Fakes {
        clock: ManualClock,
        scripts: Vec<(&'static str, VecDeque<Script>)>,
        stopped: Rc<RefCell<Vec<String>>>,
        stop: Rc<AtomicBool>,
    }

    impl Launcher for Fakes {
        type Child = Fake;

        fn start(&mut self, fw: &Firmware) -> std::io::Result<Fake> {
            let name = fw.slot.to_string();
            let scripts = &mut self.scripts.iter_mut().find(|(s, _)| *s == name).expect("scripted slot").1;
            let script = if scripts.len() > 1 { scripts.pop_front().unwrap() } else { scripts[0] };
            Ok(Fake {
                clock: self.clock.clone(),
                started: self.clock.now_us(),
                script,
                stopped: Rc::clone(&self.stopped),
                slot: name,
                stop: Rc::clone(&self.stop),
            })
        }
    }

    const HEALTHY: Script = Script { healthy_at: Some(2_000_000), exit_at: None };

    /// Supervise for [`BUDGET_US`] of simulated time: the events with their times, and
    /// the slots of daemons told to stop.
    fn supervise(
        store: Store,
        scripts: Vec<(&'static str, VecDeque<Script>)>,
    ) -> (Vec<(u64, Event)>, Vec<String>) {
        let clock = ManualClock::default();
        let stop = Rc::new(AtomicBool::new(false));
        let stopped = Rc::new(RefCell::new(Vec::new()));
        let fakes =
            Fakes { clock: clock.clone(), scripts, stopped: Rc::clone(&stopped), stop: Rc::clone(&stop) };
        let mut sup = Supervisor::new(store, "/usr/bin/kensa-fw".into(), fakes, clock.clone(), 10_000_000);
        let mut events = Vec::new();
        sup.run(&stop, |e| events.push((clock.now_us(), e.clone())));
        let stopped = stopped.borrow().clone();
        (events, stopped)
    }

    fn flashed(dir: &Path, bytes: &[u8]) -> Store {
        let mut s = Store::open_for(dir, Holds::Firmware).unwrap();
        let sha = kensa_shared::sha256_hex(bytes);
        s.begin(bytes.len() as u64, &sha).unwrap();
        s.write(0, bytes).unwrap();
        s.commit_trial(|_| Ok(())).unwrap();
        s
    }

    fn started(events: &[(u64, Event)]) -> Vec<(String, bool)> {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Started(f) => Some((f.slot.to_string(), f.trial)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_healthy_trial_firmware_becomes_the_active_one() {
        let d = tempfile::tempdir().unwrap();
        let store = flashed(d.path(), b"new firmware");
        let crash_once = Script { healthy_at: Some(1), exit_at: Some((5_000_000, i32::from(RESTART_EXIT))) };
        let (events, _) =
            supervise(store, vec![("a", [crash_once, HEALTHY].into()), ("installed", [HEALTHY].into())]);
        assert!(events.iter().any(|e| e.1 == Event::Promoted(FirmwareImage::Slot(Slot::A))), "{events:?}");
        // Promoted, so a restart runs it again, no longer on trial.
        assert_eq!(started(&events), [("a".into(), true), ("a".into(), false)]);
        let store = Store::open_for(d.path(), Holds::Firmware).unwrap();
        assert_eq!(store.active_slot().map(|s| s.0), Some(Slot::A));
    }

    #[test]
    fn a_trial_that_crashes_or_hangs_is_rolled_back_to_the_previous_firmware() {
        for (case, script) in [
            ("crash", Script { healthy_at: None, exit_at: Some((500_000, 1)) }),
            ("hang", Script { healthy_at: None, exit_at: None }),
        ] {
            let d = tempfile::tempdir().unwrap();
            let store = flashed(d.path(), b"broken firmware");
            let (events, stopped) =
                supervise(store, vec![("a", [script].into()), ("installed", [HEALTHY].into())]);
            assert!(
                matches!(&events[1].1, Event::RolledBack { slot: FirmwareImage::Slot(Slot::A), .. }),
                "{case}: {events:?}"
            );
            assert_eq!(started(&events), [("a".into(), true), ("installed".into(), false)], "{case}");
            if case == "hang" {
                assert_eq!(stopped[0], "a", "a hung trial is stopped before the old firmware starts");
            }
            let store = Store::open_for(d.path(), Holds::Firmware).unwrap();
            assert_eq!(store.active_slot(), None, "{case}: the failed slot was never made active");
        }
    }

    #[test]
    fn a_trial_is_tried_once_even_across_a_power_cut() {
        let d = tempfile::tempdir().unwrap();
        let _ = flashed(d.path(), b"new firmware");
        let store = Store::open_for(d.path(), Holds::Firmware).unwrap();
        // The supervisor takes the trial, then the power goes before it is healthy.
        assert!(store.take_trial().unwrap().is_some());
        let (events, _) = supervise(store, vec![("a", [HEALTHY].into()), ("installed", [HEALTHY].into())]);
        assert_eq!(started(&events), [("installed".into(), false)]);
    }

    #[test]
    fn a_daemon_that_exits_is_restarted_with_growing_pauses_and_at_once_when_asked() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open_for(d.path(), Holds::Firmware).unwrap();
        let crash = Script { healthy_at: Some(1), exit_at: Some((100_000, 2)) };
        let restart = Script { healthy_at: Some(1), exit_at: Some((100_000, i32::from(RESTART_EXIT))) };
        let (events, _) = supervise(store, vec![("installed", [restart, crash, crash, HEALTHY].into())]);
        let exits: Vec<Exit> = events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Exited { exit, .. } => Some(*exit),
                _ => None,
            })
            .collect();
        assert_eq!(exits, [Exit::Code(75), Exit::Code(2), Exit::Code(2)]);
        let starts: Vec<u64> =
            events.iter().filter(|(_, e)| matches!(e, Event::Started(_))).map(|(t, _)| *t).collect();
        let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]) / 100_000).collect();
        // Each daemon ran 0.1 s; then no pause (asked to restart), 1 s, 2 s.
        assert_eq!(gaps, [1, 11, 21]);
    }

    #[test]
    fn a_trial_is_promoted_only_after_its_minimum_time_and_a_crash_loop_after_goes_back() {
        let d = tempfile::tempdir().unwrap();
        let store = flashed(d.path(), b"new firmware");
        // Healthy at 2 s; then, once promoted, it fails every 0.5 s.
        let trial =
            Script { healthy_at: Some(2_000_000), exit_at: Some((8_000_000, i32::from(RESTART_EXIT))) };
        let crashing = Script { healthy_at: Some(1), exit_at: Some((500_000, 101)) };
        let clock = ManualClock::default();
        let stop = Rc::new(AtomicBool::new(false));
        let stopped = Rc::new(RefCell::new(Vec::new()));
        let scripts = vec![("a", [trial, crashing].into()), ("installed", [HEALTHY].into())];
        let fakes = Fakes { clock: clock.clone(), scripts, stopped, stop: Rc::clone(&stop) };
        let mut sup = Supervisor::new(store, "/usr/bin/kensa-fw".into(), fakes, clock.clone(), 10_000_000);
        sup.trial_min_us = 5_000_000;
        sup.backoff_us = 100_000;
        let mut events = Vec::new();
        sup.run(&stop, |e| events.push((clock.now_us(), e.clone())));
        let promoted = events.iter().find(|e| e.1 == Event::Promoted(FirmwareImage::Slot(Slot::A))).unwrap();
        assert!(promoted.0 >= 5_000_000, "promoted at {} µs, before its minimum trial", promoted.0);
        let back = events
            .iter()
            .position(|e| matches!(&e.1, Event::RolledBack { why, .. } if why.contains("of its promotion")))
            .unwrap_or_else(|| panic!("no roll-back after a crash loop: {events:?}"));
        let failures = events[..back]
            .iter()
            .filter(|e| matches!(e.1, Event::Exited { exit: Exit::Code(101), .. }))
            .count();
        assert_eq!(failures, CRASH_LOOP);
        assert!(
            matches!(&events[back + 1].1, Event::Started(f) if f.slot == FirmwareImage::Installed),
            "{events:?}"
        );
        let store = Store::open_for(d.path(), Holds::Firmware).unwrap();
        assert_eq!(store.active_slot(), None, "the firmware before it (the installed one) is active again");
    }

    #[test]
    fn an_exit_names_the_signal() {
        assert_eq!(Exit::Signal(9).to_string(), "was killed by signal 9 (SIGKILL)");
        assert_eq!(Exit::Code(2).to_string(), "exited with code 2");
    }

    #[test]
    fn only_executables_for_this_machine_are_accepted() {
        let mut arm = vec![0u8; 64];
        arm[..4].copy_from_slice(b"\x7fELF");
        arm[4] = 2;
        arm[5] = 1;
        arm[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
        let mut x86 = arm.clone();
        x86[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        assert_eq!(check_binary(&arm, &arm), Ok(()));
        let err = check_binary(&x86, &arm).unwrap_err();
        assert!(err.contains("another machine") && err.contains("0x3e") && err.contains("0xb7"), "{err}");
        assert!(check_binary(b"#!/bin/sh\necho hi\n", &arm).unwrap_err().contains("not an ELF"));
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(check_binary(&own, &own), Ok(()), "the running test binary is one");
    }
}
