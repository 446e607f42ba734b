//! The diagnostics link: the serial service a technician's `kensa diag` talks to.
//!
//! Two halves. The port thread ([`run_port`]) owns the serial device: it decodes frames,
//! keeps the session (hello, protocol version, watch on/off), reopens the port after the
//! cable is pulled, and writes whatever the station sends back. The station thread owns
//! the [`Control`]: between parts it answers pending requests ([`answer`], no I/O) and
//! publishes each decision to a watching host. Inspection never waits for the link: a
//! full outgoing queue drops events, never parts.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;
use kensa_shared::verdict::Verdict;
use kensa_shared::wire::frame::{FrameDecoder, MAX_PAYLOAD_LEN, encode};
use kensa_shared::wire::{
    BoxInfo, BoxMessage, Counters, DeviceError, Event, FirmwareState, FlashTarget, Inspection,
    PROTOCOL_VERSION, Reply, Request, RequestBody, Thumbnail,
};

use crate::clock::Clock;
use crate::model::Model;
use crate::schedule::BeltTiming;
use crate::station::{PartResult, Station};
use crate::store::{SavedReject, SavedThreshold, Store, StoreError};
use crate::supervisor::Supervised;
use kensa_shared::package::{Signature, VerifyingKey};

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
}

impl InForce {
    /// The model `m`, with or without a saved threshold and reject timing in force.
    pub fn of(m: &Model, threshold_saved: bool, reject_saved: bool) -> Self {
        Self { name: m.describe(), sha256: m.manifest().onnx_sha256.clone(), threshold_saved, reject_saved }
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
    /// Rebuild the pipeline in this process ([`RequestBody::Restart`]).
    RestartPipeline,
    /// Exit so that the supervisor starts the flashed firmware on trial.
    StartFlashedFirmware,
}

/// The station thread's end of the link.
#[derive(Debug)]
pub struct Control {
    requests: Receiver<Request>,
    out: SyncSender<BoxMessage>,
    watching: Arc<AtomicBool>,
    identity: Identity,
}

/// The port thread's end of the link.
#[derive(Debug)]
pub struct PortEnd {
    requests: mpsc::Sender<Request>,
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

/// Firmware flashing, for a daemon a supervisor can restart into the upload.
#[derive(Debug)]
pub struct FirmwareFlasher {
    /// Where firmware uploads land.
    pub store: Store,
    /// The first bytes of the running executable (its machine).
    pub running_header: Vec<u8>,
}

/// Model (and firmware) flashing and saved settings, run on the port thread so that file
/// I/O, verification and loading never hold up the station.
#[derive(Debug)]
pub struct Flasher {
    /// Where model uploads land and settings are saved.
    pub store: Store,
    /// Keys a flashed package or firmware must be signed by (empty: any intact upload).
    pub trusted: Vec<VerifyingKey>,
    /// The inspector's intake of new models.
    pub swap: mpsc::Sender<Model>,
    /// Shown by `Info`, keys saved settings.
    pub model: Arc<Mutex<InForce>>,
    /// Present when firmware can be flashed (started by a supervisor).
    pub firmware: Option<FirmwareFlasher>,
    /// The upload in progress: a firmware one with its signature, or a model one.
    uploading: Option<FlashTarget>,
    /// Reject timing in force, to check a new one against.
    timing: BeltTiming,
}

impl Flasher {
    /// Flash into `store`; firmware too when `firmware` is given.
    pub fn new(
        store: Store,
        trusted: Vec<VerifyingKey>,
        swap: mpsc::Sender<Model>,
        model: Arc<Mutex<InForce>>,
        firmware: Option<FirmwareFlasher>,
        timing: BeltTiming,
    ) -> Self {
        Self { store, trusted, swap, model, firmware, uploading: None, timing }
    }

    /// The store the upload in progress goes to.
    fn target_store(&mut self) -> Result<&mut Store, DeviceError> {
        match &self.uploading {
            Some(FlashTarget::Firmware { .. }) => self
                .firmware
                .as_mut()
                .map(|f| &mut f.store)
                .ok_or_else(|| DeviceError::Failed("firmware flashing is not available".into())),
            Some(FlashTarget::Model) => Ok(&mut self.store),
            None => Err(DeviceError::Failed(StoreError::NoUpload.to_string())),
        }
    }

    /// Save a setting before the station applies it: `Ok(false)` when it is not one
    /// that is saved, an error when it is invalid or cannot be saved (then it is not
    /// applied either, so that what runs is what a restart brings back).
    fn save_setting(&mut self, body: &RequestBody) -> Result<bool, DeviceError> {
        let mut settings = self.store.settings();
        match *body {
            RequestBody::SetThreshold(value) if value.is_finite() => {
                let model = self.model.lock().map(|m| m.sha256.clone()).unwrap_or_default();
                settings.threshold = Some(SavedThreshold { model, value });
            }
            RequestBody::SetReject { delay_ms, pulse_ms } => {
                self.timing = self.timing.with_reject(delay_ms, pulse_ms).map_err(DeviceError::Failed)?;
                settings.reject = Some(SavedReject { delay_ms, pulse_ms });
            }
            _ => return Ok(false),
        }
        self.store
            .save_settings(&settings)
            .map_err(|e| DeviceError::Failed(format!("saving settings: {e}")))?;
        if let Ok(mut m) = self.model.lock() {
            m.threshold_saved |= settings.threshold.is_some_and(|t| t.model == m.sha256);
            m.reject_saved |= settings.reject.is_some();
        }
        Ok(true)
    }

    fn handle(&mut self, body: &RequestBody) -> Result<Reply, DeviceError> {
        let failed = |e: StoreError| DeviceError::Failed(e.to_string());
        match body {
            RequestBody::FlashBegin { target, size, sha256 } => {
                if matches!(target, FlashTarget::Firmware { .. }) && self.firmware.is_none() {
                    return Err(DeviceError::Failed(
                        "firmware can be flashed only to a box started with `kensa-fw --supervise`".into(),
                    ));
                }
                self.uploading = Some(target.clone());
                self.target_store()?.begin(*size, sha256).map(Reply::FlashOffset).map_err(failed)
            }
            RequestBody::FlashChunk { offset, data } => {
                self.target_store()?.write(*offset, data).map(Reply::FlashOffset).map_err(failed)
            }
            RequestBody::FlashCommit if matches!(self.uploading, Some(FlashTarget::Firmware { .. })) => {
                let signature = match &self.uploading {
                    Some(FlashTarget::Firmware { signature }) => signature.clone(),
                    _ => None,
                };
                let fw = self.firmware.as_mut().expect("checked at begin");
                let trusted = &self.trusted;
                let header = &fw.running_header;
                let path = fw
                    .store
                    .commit_trial(|bytes| {
                        let sig = signature
                            .as_deref()
                            .map(Signature::from_slice)
                            .transpose()
                            .map_err(|_| "firmware signature is malformed".to_string())?;
                        Signature::verify_detached(sig.as_ref(), bytes, trusted).map_err(firmware_trust)?;
                        crate::supervisor::check_binary(bytes, header)
                    })
                    .map_err(failed)?;
                tracing::warn!("firmware flashed to {}: restarting into it on trial", path.display());
                self.uploading = None;
                Ok(Reply::Restarting)
            }
            RequestBody::FlashCommit => {
                let mut loaded = None;
                let samples = self.store.samples();
                let path = self
                    .store
                    .commit(|bytes| {
                        let mut m = Model::from_bytes(bytes, "flashed package", &self.trusted)
                            .map_err(|e| e.to_string())?;
                        m.self_test(&samples)?;
                        loaded = Some(m);
                        Ok(())
                    })
                    .map_err(failed)?;
                let m = loaded.expect("verified before commit");
                let name = m.describe();
                tracing::info!("flashed {} to {}", name, path.display());
                if let Ok(mut active) = self.model.lock() {
                    *active = InForce::of(&m, false, active.reject_saved);
                }
                self.swap
                    .send(m)
                    .map_err(|_| DeviceError::Failed("the inspection pipeline has stopped".into()))?;
                Ok(Reply::Flashed(name))
            }
            _ => Err(DeviceError::Failed("not a flash request".into())),
        }
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
    /// Answer every pending request (call between parts, at least every few ms).
    pub fn serve<P: OutputPin, C: Clock>(&self, station: &mut Station<P, C>, overruns: &AtomicU64) {
        while let Ok(req) = self.requests.try_recv() {
            let body = answer(station, &req.body, &self.identity, overruns.load(Ordering::Relaxed));
            self.send(BoxMessage::Reply { id: req.id, body });
        }
    }

    /// Stream one decision to a watching host.
    pub fn publish(&self, r: &PartResult) {
        if self.watching.load(Ordering::Relaxed) {
            self.send(BoxMessage::Event(Event::Inspection(record(r))));
        }
    }

    fn send(&self, msg: BoxMessage) {
        match self.out.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => tracing::debug!("diagnostics link is behind: message dropped"),
        }
    }
}

/// The wire record of a decision.
fn record(r: &PartResult) -> Inspection {
    Inspection {
        part: r.part,
        captured_us: r.captured_us,
        score: r.score.unwrap_or(f32::NAN),
        verdict: r.verdict,
        latency_us: r.decided_us.saturating_sub(r.captured_us).min(u32::MAX as u64) as u32,
    }
}

/// A part's thumbnail as grey pixels for the wire.
fn thumbnail(r: &PartResult) -> Option<Thumbnail> {
    let t = image::DynamicImage::ImageRgb8(r.thumbnail.clone()?).to_luma8();
    Some(Thumbnail {
        inspection: record(r),
        width: t.width() as u16,
        height: t.height() as u16,
        pixels: t.into_raw(),
    })
}

/// The station's answer to a request the port thread passed on.
pub fn answer<P: OutputPin, C: Clock>(
    station: &mut Station<P, C>,
    body: &RequestBody,
    identity: &Identity,
    overruns: u64,
) -> Result<Reply, DeviceError> {
    match body {
        RequestBody::Info => {
            let model = identity.model.lock().map(|m| m.clone()).unwrap_or_default();
            Ok(Reply::Info(BoxInfo {
                firmware_version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                uptime_s: identity.started.elapsed().as_secs(),
                model: Some(model.name),
                threshold: station.threshold(),
                source: identity.source.clone(),
                line_stopped: station.line_stopped(),
                threshold_saved: model.threshold_saved,
                reject_delay_ms: station.reject_timing().delay_us as f32 / 1e3,
                reject_pulse_ms: station.reject_timing().width_us as f32 / 1e3,
                reject_saved: model.reject_saved,
                firmware_sha256: identity.firmware_sha256.clone(),
                firmware_state: identity.firmware_state(),
            }))
        }
        RequestBody::Status => {
            let c = station.counters();
            Ok(Reply::Status(Counters {
                parts: c.parts,
                ok: c.ok,
                ng: c.ng,
                uninspected: c.uninspected,
                rejects: c.rejects,
                merged: c.merged,
                late: c.late,
                overruns,
                line_stops: c.line_stops,
            }))
        }
        RequestBody::SetThreshold(t) if t.is_finite() => {
            station.set_threshold(*t);
            Ok(Reply::Done)
        }
        RequestBody::SetThreshold(t) => Err(DeviceError::Failed(format!("threshold {t} is not a number"))),
        RequestBody::SetReject { delay_ms, pulse_ms } => {
            let timing =
                station.reject_timing().with_reject(*delay_ms, *pulse_ms).map_err(DeviceError::Failed)?;
            station.set_reject_timing(timing);
            Ok(Reply::Done)
        }
        RequestBody::TestReject => {
            station.test_reject();
            Ok(Reply::Done)
        }
        RequestBody::ClearLineStop => {
            station.clear_line_stop();
            Ok(Reply::Done)
        }
        RequestBody::LastNg(n) => {
            let part = station
                .recent()
                .rev()
                .filter(|r| r.verdict != Verdict::Ok && r.thumbnail.is_some())
                .nth(*n as usize);
            Ok(Reply::LastNg(part.and_then(thumbnail)))
        }
        RequestBody::Snapshot => Ok(Reply::Snapshot(station.last_seen().and_then(thumbnail))),
        // Leave room in the frame for the message around the lines.
        RequestBody::Logs => Ok(Reply::Logs(identity.logbook.tail(MAX_PAYLOAD_LEN - 256))),
        // The port thread keeps the session and the store; these never reach the station.
        RequestBody::Hello { .. }
        | RequestBody::Watch(_)
        | RequestBody::FlashBegin { .. }
        | RequestBody::FlashChunk { .. }
        | RequestBody::FlashCommit
        | RequestBody::Restart => Err(DeviceError::Failed("session request reached the station".into())),
    }
}

/// Serve `path` until `stop`: open (retrying with backoff while it is missing), run a
/// session, reopen when the line goes away.
pub fn run_port(path: PathBuf, baud: u32, mut end: PortEnd, stop: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) {
        match serialport::new(path.to_string_lossy(), baud).timeout(Duration::from_millis(20)).open_native() {
            Ok(mut port) => {
                tracing::info!("diagnostics link on {}", path.display());
                backoff = Duration::from_millis(100);
                reported = false;
                if let Err(e) = session(&mut port, &mut end, &stop) {
                    tracing::warn!("diagnostics link on {} lost: {e}", path.display());
                }
                end.watching.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                if !reported {
                    tracing::warn!("cannot open diagnostics port {}: {e}; retrying", path.display());
                    reported = true;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One session on an open port, until it fails or `stop`.
pub fn session<T: Read + Write>(port: &mut T, end: &mut PortEnd, stop: &AtomicBool) -> std::io::Result<()> {
    let mut decoder = FrameDecoder::new();
    let mut open = false;
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match port.read(&mut buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                for frame in decoder.push::<Request>(&buf[..n]) {
                    let req = match frame {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!("diagnostics frame dropped: {e}");
                            continue;
                        }
                    };
                    let reply = match req.body {
                        RequestBody::Hello { protocol } if protocol == PROTOCOL_VERSION => {
                            open = true;
                            Some(Ok(Reply::Hello { protocol }))
                        }
                        RequestBody::Hello { protocol } => Some(Err(DeviceError::ProtocolMismatch {
                            box_version: PROTOCOL_VERSION,
                            host_version: protocol,
                        })),
                        _ if !open => Some(Err(DeviceError::NoSession)),
                        RequestBody::Watch(on) => {
                            end.watching.store(on, Ordering::Relaxed);
                            Some(Ok(Reply::Done))
                        }
                        RequestBody::FlashBegin { .. }
                        | RequestBody::FlashChunk { .. }
                        | RequestBody::FlashCommit => Some(match &mut end.flash {
                            Some(f) => f.handle(&req.body),
                            None => Err(no_store()),
                        }),
                        RequestBody::Restart => Some(Ok(Reply::Restarting)),
                        // Saved here, on the port thread, then applied by the station.
                        RequestBody::SetThreshold(_) | RequestBody::SetReject { .. }
                            if end.flash.is_some() =>
                        {
                            match end.flash.as_mut().map(|f| f.save_setting(&req.body)) {
                                Some(Err(e)) => Some(Err(e)),
                                _ => {
                                    let _ = end.requests.send(req.clone());
                                    None
                                }
                            }
                        }
                        _ => {
                            let _ = end.requests.send(req.clone());
                            None
                        }
                    };
                    if let Some(body) = reply {
                        let restarting = body == Ok(Reply::Restarting);
                        write_frame(port, &BoxMessage::Reply { id: req.id, body })?;
                        if restarting {
                            let next = match req.body {
                                RequestBody::Restart => Next::RestartPipeline,
                                _ => Next::StartFlashedFirmware,
                            };
                            tracing::warn!("stopping the line: {next:?}");
                            if let Ok(mut n) = end.next.lock() {
                                *n = next;
                            }
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        while let Ok(msg) = end.out.try_recv() {
            write_frame(port, &msg)?;
        }
    }
    Ok(())
}

/// A refused firmware signature, in the technician's words.
fn firmware_trust(e: kensa_shared::package::PackageError) -> String {
    use kensa_shared::package::PackageError;
    match e {
        PackageError::Unsigned => "firmware is not signed, and this box accepts only signed firmware".into(),
        PackageError::UntrustedSigner(k) => format!("firmware is signed by {k}, which is not a trusted key"),
        _ => "firmware signature does not verify (altered after signing, or a bad signature)".into(),
    }
}

fn no_store() -> DeviceError {
    DeviceError::Failed("this box has no store configured (model.store or --store)".into())
}

fn write_frame<T: Write>(port: &mut T, msg: &BoxMessage) -> std::io::Result<()> {
    let bytes = encode(msg).map_err(std::io::Error::other)?;
    port.write_all(&bytes)?;
    port.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::{Pusher, SimPin};
    use crate::clock::ManualClock;
    use crate::config::Uninspected;
    use crate::schedule::{BeltTiming, RejectScheduler};
    use crate::station::Inspected;

    fn station() -> (Station<SimPin<ManualClock>, ManualClock>, ManualClock, SimPin<ManualClock>) {
        let clock = ManualClock::default();
        let pin = SimPin::new(clock.clone());
        let timing = BeltTiming { delay_us: 500_000, width_us: 20_000, min_gap_us: 5_000, lead_us: 1_000 };
        let pusher = Pusher::new(pin.clone(), false).unwrap();
        (
            Station::new(1.0, pusher, RejectScheduler::new(timing), clock.clone(), Uninspected::Reject),
            clock,
            pin,
        )
    }

    fn identity() -> Identity {
        Identity {
            model: Arc::new(Mutex::new(InForce { name: "patchcore 256x256".into(), ..Default::default() })),
            source: "synthetic".into(),
            started: Instant::now(),
            logbook: crate::logbook::Logbook::default(),
            firmware_sha256: "00".repeat(32),
            supervised: None,
        }
    }

    #[test]
    fn the_station_answers_status_threshold_test_fire_and_thumbnails() {
        let (mut st, clock, pin) = station();
        let id = identity();
        let thumb = image::RgbImage::from_pixel(64, 48, image::Rgb([90, 90, 90]));
        for (i, score) in [0.5f32, 3.0, 0.2].into_iter().enumerate() {
            let part =
                Inspected { part: i as u64, truth: None, score: Ok(score), thumbnail: Some(thumb.clone()) };
            st.decide(clock.now_us(), part);
        }
        let Ok(Reply::Status(c)) = answer(&mut st, &RequestBody::Status, &id, 4) else { panic!() };
        assert_eq!((c.parts, c.ok, c.ng, c.rejects, c.overruns), (3, 2, 1, 1, 4));

        assert_eq!(answer(&mut st, &RequestBody::SetThreshold(0.4), &id, 0), Ok(Reply::Done));
        st.decide(clock.now_us(), Inspected { part: 3, truth: None, score: Ok(0.5), thumbnail: None });
        assert_eq!(st.counters().ng, 2, "0.5 is NG at the new threshold");
        assert!(answer(&mut st, &RequestBody::SetThreshold(f32::NAN), &id, 0).is_err());
        let slower = RequestBody::SetReject { delay_ms: 520.0, pulse_ms: 25.0 };
        assert_eq!(answer(&mut st, &slower, &id, 0), Ok(Reply::Done));
        assert_eq!((st.reject_timing().delay_us, st.reject_timing().width_us), (520_000, 25_000));
        let too_soon = RequestBody::SetReject { delay_ms: 0.5, pulse_ms: 25.0 };
        assert!(
            matches!(answer(&mut st, &too_soon, &id, 0), Err(DeviceError::Failed(m)) if m.contains("lead"))
        );
        let back = RequestBody::SetReject { delay_ms: 500.0, pulse_ms: 20.0 };
        assert_eq!(answer(&mut st, &back, &id, 0), Ok(Reply::Done));
        let Ok(Reply::Info(info)) = answer(&mut st, &RequestBody::Info, &id, 0) else { panic!() };
        assert_eq!((info.threshold, info.protocol), (0.4, PROTOCOL_VERSION));

        let Ok(Reply::LastNg(Some(t))) = answer(&mut st, &RequestBody::LastNg(0), &id, 0) else { panic!() };
        assert_eq!((t.inspection.part, t.width, t.height, t.pixels.len()), (1, 64, 48, 64 * 48));
        assert_eq!(answer(&mut st, &RequestBody::LastNg(1), &id, 0), Ok(Reply::LastNg(None)));
        // The snapshot is the latest frame, an OK part's included.
        let Ok(Reply::Snapshot(Some(snap))) = answer(&mut st, &RequestBody::Snapshot, &id, 0) else {
            panic!()
        };
        assert_eq!((snap.inspection.part, snap.inspection.verdict), (2, Verdict::Ok));
        id.logbook.push("WARN camera lost");
        assert_eq!(
            answer(&mut st, &RequestBody::Logs, &id, 0),
            Ok(Reply::Logs(vec!["WARN camera lost".into()]))
        );

        // Test fire: one stroke 2 ms from now (lead + 1 ms), whatever the belt delay.
        let before = pin.log().lock().unwrap().len();
        assert_eq!(answer(&mut st, &RequestBody::TestReject, &id, 0), Ok(Reply::Done));
        for _ in 0..600 {
            clock.advance(1_000);
            st.tick().unwrap();
        }
        let rises: Vec<u64> =
            pin.log().lock().unwrap()[before..].iter().filter(|e| e.1).map(|e| e.0).collect();
        assert_eq!(rises, [2_000, 500_000], "the test stroke, then the NG parts' shared stroke");
    }

    /// A byte pipe standing in for the serial port: reads from `input`, writes to `output`.
    struct Wire {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.input.read(buf)? {
                0 => Err(std::io::ErrorKind::BrokenPipe.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_session_needs_hello_survives_garbage_and_forwards_requests() {
        let (control, mut end) = channel(identity(), None);
        let req = |id, body| encode(&Request { id, body }).unwrap();
        let mut input = req(1, RequestBody::Status);
        input.extend(b"\x07garbage\x00\x00");
        input.extend(req(2, RequestBody::Hello { protocol: PROTOCOL_VERSION + 1 }));
        input.extend(req(3, RequestBody::Hello { protocol: PROTOCOL_VERSION }));
        let mut corrupt = req(4, RequestBody::Info);
        corrupt[3] ^= 0x10;
        input.extend(corrupt);
        input.extend(req(5, RequestBody::Watch(true)));
        input.extend(req(6, RequestBody::Status));
        let mut wire = Wire { input: std::io::Cursor::new(input), output: Vec::new() };
        let err = session(&mut wire, &mut end, &AtomicBool::new(false)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "a dead line ends the session");

        let mut dec = FrameDecoder::new();
        let replies: Vec<BoxMessage> = dec.push(&wire.output).into_iter().map(Result::unwrap).collect();
        let expect = [
            BoxMessage::Reply { id: 1, body: Err(DeviceError::NoSession) },
            BoxMessage::Reply {
                id: 2,
                body: Err(DeviceError::ProtocolMismatch {
                    box_version: PROTOCOL_VERSION,
                    host_version: PROTOCOL_VERSION + 1,
                }),
            },
            BoxMessage::Reply { id: 3, body: Ok(Reply::Hello { protocol: PROTOCOL_VERSION }) },
            BoxMessage::Reply { id: 5, body: Ok(Reply::Done) },
        ];
        assert_eq!(replies, expect, "the corrupt frame costs itself only");
        assert!(end.watching.load(Ordering::Relaxed));
        // Only the station's business is passed on.
        let forwarded: Vec<u32> = control.requests.try_iter().map(|r| r.id).collect();
        assert_eq!(forwarded, [6]);
    }
}
