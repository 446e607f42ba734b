//! The diagnostics link: the serial service a technician's `kensa diag` talks to.
//!
//! Two halves. The port thread ([`port::run_port`]) owns the serial device: it decodes
//! frames, keeps the session ([`session`]: hello, protocol version, watch on/off), runs
//! the [`flasher`], reopens the port after the cable is pulled, and writes whatever the
//! station sends back. The station thread owns the [`Control`]: between parts it answers
//! pending station requests ([`answer`], no I/O) and publishes each decision to a
//! watching host. Inspection never waits for the link: a full outgoing queue drops
//! events, never parts. Requests arrive already sorted by owner
//! (`kensa_shared::wire::RequestBody`), so each room matches only its own.

pub mod answer;
pub mod flasher;
pub mod port;
pub mod session;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use embedded_hal::digital::OutputPin;
use kensa_shared::wire::{BoxMessage, Event, FirmwareState, PackageInfo, StationRequest};

use crate::clock::Clock;
use crate::model::Model;
use crate::station::{PartResult, Station};
use crate::store::Store;
use crate::supervisor::Supervised;
pub use answer::answer;
pub use flasher::{FirmwareFlasher, Flasher};
pub use port::run_port;
pub use session::session;

/// Messages waiting for the port; beyond this, events are dropped.
const OUT_QUEUE: usize = 256;

/// What the box inspects with: the model (as the link reports it and keys a saved
/// threshold by) and whether settings saved over the link override its defaults.
#[derive(Debug, Clone, Default)]
pub struct InForce {
    /// Kind and input size, e.g. `patchcore 256x256`.
    pub name: String,
    /// `onnx_sha256` of its manifest.
    pub sha256: String,
    /// Whether the threshold in force is one saved over the link for this model.
    pub threshold_saved: bool,
    /// Whether the reject timing in force is one saved over the link.
    pub reject_saved: bool,
    /// Precision, export time, signer and where it was loaded from.
    pub package: PackageInfo,
    /// Its latency on this box, as its self-test measured it (µs).
    pub latency_p99_us: Option<u64>,
}

impl InForce {
    /// The model `m`, loaded from `origin`, with or without a saved threshold and reject
    /// timing in force.
    pub fn of(m: &Model, origin: String, threshold_saved: bool, reject_saved: bool) -> Self {
        let manifest = m.manifest();
        let package = PackageInfo {
            sha256: manifest.onnx_sha256.clone(),
            precision: format!("{:?}", manifest.precision),
            origin,
            created_unix: manifest.created_unix,
            signer: m.signer().map(str::to_string),
            trusted_keys: 0, // the identity's, filled in when answering
        };
        Self {
            name: m.describe(),
            sha256: manifest.onnx_sha256.clone(),
            threshold_saved,
            reject_saved,
            package,
            latency_p99_us: m.latency_p99_us(),
        }
    }

    /// No model: none of the candidates loaded, for the reason `why`.
    pub fn none(why: &str) -> Self {
        let package = PackageInfo { origin: format!("none: {why}"), ..PackageInfo::default() };
        Self { name: "none".into(), package, ..Self::default() }
    }
}

/// What the box says about itself in [`Reply::Info`].
#[derive(Debug, Clone)]
pub struct Identity {
    /// Model in use; replaced when a flashed model takes over.
    pub model: Arc<Mutex<InForce>>,
    /// Frame source description.
    pub source: String,
    /// Daemon start.
    pub started: Instant,
    /// Recent log lines.
    pub logbook: crate::logbook::Logbook,
    /// SHA-256 of the running executable.
    pub firmware_sha256: String,
    /// Set when a supervisor started this daemon, with the firmware store it uses.
    pub supervised: Option<(Supervised, PathBuf)>,
    /// Keys packages and firmware must be signed by (0: any intact upload).
    pub trusted_keys: usize,
}

impl Identity {
    fn firmware_state(&self) -> FirmwareState {
        match &self.supervised {
            None => FirmwareState::Unsupervised,
            Some((s, dir)) => match Store::open_for(dir, crate::store::Holds::Firmware) {
                Ok(store) => s.state(&store),
                // Unreadable: do not let a host take an unconfirmed firmware for committed.
                Err(_) => FirmwareState::Trial,
            },
        }
    }
}

/// What the daemon does once the link has stopped the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Next {
    /// Nothing asked: exit as usual.
    #[default]
    Exit,
    /// Rebuild the pipeline in this process ([`SessionRequest::Restart`]).
    RestartPipeline,
    /// Exit so that the supervisor starts the flashed firmware on trial.
    StartFlashedFirmware,
}

/// The station thread's end of the link.
#[derive(Debug)]
pub struct Control {
    requests: Receiver<(u32, StationRequest)>,
    out: SyncSender<BoxMessage>,
    watching: Arc<AtomicBool>,
    identity: Identity,
}

/// The port thread's end of the link.
#[derive(Debug)]
pub struct PortEnd {
    requests: mpsc::Sender<(u32, StationRequest)>,
    out: Receiver<BoxMessage>,
    watching: Arc<AtomicBool>,
    flash: Option<Flasher>,
    next: Arc<Mutex<Next>>,
}

impl PortEnd {
    /// What the link asked of the daemon when it stopped the line.
    pub fn next(&self) -> Arc<Mutex<Next>> {
        Arc::clone(&self.next)
    }
}

/// A connected pair of ends; `flash` enables model flashing.
pub fn channel(identity: Identity, flash: Option<Flasher>) -> (Control, PortEnd) {
    let (req_tx, req_rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::sync_channel(OUT_QUEUE);
    let watching = Arc::new(AtomicBool::new(false));
    (
        Control { requests: req_rx, out: out_tx, watching: Arc::clone(&watching), identity },
        PortEnd { requests: req_tx, out: out_rx, watching, flash, next: Arc::default() },
    )
}

impl Control {
    /// Answer every pending request (call between parts, at least every few ms);
    /// `telemetry` tells a status reply how the fleet telemetry is doing.
    pub fn serve<P: OutputPin, C: Clock>(
        &self,
        station: &mut Station<P, C>,
        overruns: u64,
        telemetry: impl Fn() -> Option<kensa_shared::wire::TelemetryState>,
    ) {
        while let Ok((id, req)) = self.requests.try_recv() {
            let mut body = answer(station, &req, &self.identity, overruns);
            if let Ok(kensa_shared::wire::Reply::Status(s)) = &mut body {
                s.telemetry = telemetry();
            }
            self.send(BoxMessage::Reply { id, body });
        }
    }

    /// Stream one decision to a watching host.
    pub fn publish(&self, r: &PartResult) {
        if self.watching.load(Ordering::Relaxed) {
            self.send(BoxMessage::Event(Event::Inspection(r.inspection())));
        }
    }

    fn send(&self, msg: BoxMessage) {
        match self.out.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => tracing::debug!("diagnostics link is behind: message dropped"),
        }
    }
}
