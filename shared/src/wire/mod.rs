//! The serial protocol between `kensa` (host) and `kensa-fw` (box).
//!
//! Every message both sides exchange is declared here once; a new message is one edit and
//! a side that lags behind fails to compile. [`frame`] turns messages into bytes.
//!
//! Conversation: the host opens with [`SessionRequest::Hello`]; the box answers with its own
//! [`PROTOCOL_VERSION`] and refuses (with [`DeviceError::ProtocolMismatch`]) anything else
//! until versions agree. Each request carries an `id` the reply echoes, so a reply that
//! arrives after a retry is matched to the right request. The box may also send
//! [`BoxMessage::Event`]s at any time (results stream).

pub mod endpoint;
pub mod frame;

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

/// Version of the message layout in this module. Bump on any change to a serialised type:
/// `tests/wire_layout.rs` holds the bytes of every message kind per version and fails
/// until it is bumped.
pub const PROTOCOL_VERSION: u16 = 9;

/// Largest `data` in one [`FlashRequest::Chunk`] (fits one frame with its header).
pub const FLASH_CHUNK: usize = 4096;

/// A message from the host to the box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the host, echoed in the reply.
    pub id: u32,
    /// What is asked.
    pub body: RequestBody,
}

/// What the host can ask of a box, grouped by who on the box answers: the port thread
/// keeps the session, the station answers between parts, the flasher owns the store.
/// Each handler matches its own group completely, so no request can reach a part of the
/// box that does not know it. [`endpoint`] gives each request its reply type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Answered by the port thread.
    Session(SessionRequest),
    /// Answered by the station, between two parts.
    Station(StationRequest),
    /// Answered by the flasher, on the port thread (file I/O never holds up a part).
    Flash(FlashRequest),
}

/// The session: versions, the results stream, restarting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionRequest {
    /// Open a session; `protocol` is the host's [`PROTOCOL_VERSION`].
    Hello {
        /// The host's protocol version.
        protocol: u16,
    },
    /// Start (`true`) or stop streaming an [`Event::Inspection`] per part.
    Watch(bool),
    /// Rebuild the pipeline: reopen the camera and outputs, reload the active model and
    /// the saved settings. Parts passing meanwhile are not inspected.
    Restart,
}

/// What the station reports and changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StationRequest {
    /// Versions, model, uptime, configuration summary.
    Info,
    /// Live counters.
    Status,
    /// Fire the reject output once, for wiring checks.
    TestReject,
    /// Change the decision threshold from now on (saved for the model in use when the
    /// box has a store).
    SetThreshold(f32),
    /// Change the reject timing from the next NG part on (saved when the box has a store).
    SetReject {
        /// Capture → part in front of the pusher (ms).
        delay_ms: f32,
        /// Pusher pulse width (ms).
        pulse_ms: f32,
    },
    /// Clear a raised line-stop output after the fault is fixed.
    ClearLineStop,
    /// The thumbnail of the `n`-th most recent NG or uninspected part that has one
    /// (0 = newest).
    LastNg(u8),
    /// The newest log lines (as many as fit one frame).
    Logs,
    /// A thumbnail of the latest frame the camera delivered, whatever its verdict.
    Snapshot,
}

/// Uploading a model package or a firmware binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FlashRequest {
    /// Start (or resume) an upload; the box answers with the bytes it already holds of
    /// this very upload.
    Begin {
        /// What the bytes are.
        target: FlashTarget,
        /// Upload size (bytes).
        size: u64,
        /// Lower-case hex SHA-256 of the package.
        sha256: String,
    },
    /// Bytes from `offset` (at most [`FLASH_CHUNK`]).
    Chunk {
        /// Where `data` starts in the upload.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Verify the upload and switch to it: a model (size, hash, signature, load,
    /// self-test) between two parts; a firmware (size, hash, signature, architecture)
    /// by restarting into it on trial.
    Commit,
}

impl From<SessionRequest> for RequestBody {
    fn from(r: SessionRequest) -> Self {
        Self::Session(r)
    }
}

impl From<StationRequest> for RequestBody {
    fn from(r: StationRequest) -> Self {
        Self::Station(r)
    }
}

impl From<FlashRequest> for RequestBody {
    fn from(r: FlashRequest) -> Self {
        Self::Flash(r)
    }
}

/// What a flash upload carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FlashTarget {
    /// A model package (signed inside, when signed).
    Model,
    /// A `kensa-fw` executable for the box.
    Firmware {
        /// Detached ed25519 signature over the binary (`kensa sign`): 32 bytes of public
        /// key, then 64 of signature.
        signature: Option<Vec<u8>>,
    },
}

/// A message from the box to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BoxMessage {
    /// Answer to the request with the same `id`.
    Reply {
        /// The request's id.
        id: u32,
        /// The answer, or why the box refused.
        body: Result<Reply, DeviceError>,
    },
    /// Unsolicited news from the line.
    Event(Event),
}

/// Successful answers, one per request kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`SessionRequest::Hello`].
    Hello {
        /// The box's protocol version.
        protocol: u16,
    },
    /// Answer to [`StationRequest::Info`] (boxed: it is by far the largest reply; the
    /// bytes on the wire are the same).
    Info(Box<BoxInfo>),
    /// Answer to [`StationRequest::Status`].
    Status(Status),
    /// The request was carried out and has nothing to report.
    Done,
    /// Answer to [`StationRequest::LastNg`]: `None` when fewer rejected parts are kept.
    LastNg(Option<Thumbnail>),
    /// Bytes of the upload the box holds (answer to [`FlashRequest::Begin`] and [`FlashRequest::Chunk`]).
    FlashOffset(u64),
    /// The box now inspects with the flashed model (its description).
    Flashed(String),
    /// Answer to [`StationRequest::Logs`], oldest first.
    Logs(Vec<String>),
    /// Answer to [`StationRequest::Snapshot`]: `None` before the first frame.
    Snapshot(Option<Thumbnail>),
    /// The box is about to restart (its pipeline, or into flashed firmware); the link
    /// drops and comes back.
    Restarting,
}

/// A small greyscale picture of a rejected part, with its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thumbnail {
    /// The part's inspection.
    pub inspection: Inspection,
    /// Width (px).
    pub width: u16,
    /// Height (px).
    pub height: u16,
    /// Row-major grey levels, `width × height` bytes (at most 64 × 64: one frame).
    pub pixels: Vec<u8>,
}

/// Refusals a box can give; a broken link is a different error, on the host side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DeviceError {
    /// The peers speak different protocol versions.
    #[error("protocol mismatch: box speaks {box_version}, host {host_version}")]
    ProtocolMismatch {
        /// Version the box speaks.
        box_version: u16,
        /// Version the host announced.
        host_version: u16,
    },
    /// The request needs a [`SessionRequest::Hello`] first.
    #[error("no session: send Hello first")]
    NoSession,
    /// The box understood the request but could not carry it out.
    #[error("{0}")]
    Failed(String),
}

/// Identity of a box and what it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxInfo {
    /// `kensa-fw` version string.
    pub firmware_version: String,
    /// Protocol version.
    pub protocol: u16,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Name of the active model, if one is loaded.
    pub model: Option<String>,
    /// What the model in force is, for a technician checking what runs.
    pub package: PackageInfo,
    /// Current decision threshold.
    pub threshold: f32,
    /// Frame source, as the daemon describes it.
    pub source: String,
    /// Whether the line is stopped (the run permit off), latched or by an alarm.
    pub line_stopped: bool,
    /// Whether `threshold` is a saved override (set over the link) rather than the model's.
    pub threshold_saved: bool,
    /// Capture → pusher delay in force (ms).
    pub reject_delay_ms: f32,
    /// Pusher pulse width in force (ms).
    pub reject_pulse_ms: f32,
    /// Whether the reject timing is a saved override rather than the configuration's.
    pub reject_saved: bool,
    /// Lower-case hex SHA-256 of the running `kensa-fw` executable.
    pub firmware_sha256: String,
    /// How the running firmware is looked after.
    pub firmware_state: FirmwareState,
}

/// The package a box inspects with: enough to tell it from another at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackageInfo {
    /// Graph sha256 (the manifest's `onnx_sha256`).
    pub sha256: String,
    /// Number format, e.g. `Int8`.
    pub precision: String,
    /// Where it was loaded from: `slot a`, `slot b`, a file, or `built-in demo`.
    pub origin: String,
    /// Export time (Unix seconds).
    pub created_unix: u64,
    /// Hex public key of its signer, when signed.
    pub signer: Option<String>,
    /// Keys this box accepts packages and firmware from (0: any intact upload).
    pub trusted_keys: u16,
}

/// Whether firmware can be flashed, and whether the running one is on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FirmwareState {
    /// Not started by `kensa-fw --supervise`: firmware cannot be flashed.
    Unsupervised,
    /// Running the installed or a flashed firmware that passed its health check.
    Committed,
    /// Running a freshly flashed firmware that has not yet reported healthy; the previous
    /// one returns if it does not in time.
    Trial,
}

/// Running totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Parts seen (one per frame slot or trigger).
    pub parts: u64,
    /// Parts that passed.
    pub ok: u64,
    /// Parts judged defective.
    pub ng: u64,
    /// Parts that could not be inspected (camera, model, corrupt frame, overrun).
    pub uninspected: u64,
    /// Parts pushed off (strokes planned, merged ones included).
    pub rejects: u64,
    /// Of those, parts that shared a neighbour's stroke.
    pub merged: u64,
    /// Decisions that came too late for their part's reject slot.
    pub late: u64,
    /// Parts that passed while inference was behind (counted uninspected too).
    pub overruns: u64,
    /// Times the line-stop output was raised.
    pub line_stops: u64,
}

/// Answer to [`StationRequest::Status`]: the totals, whether the line may run, and what
/// holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Totals since start (kept across a pipeline restart).
    pub counters: Counters,
    /// Whether the run-permit output is on: no alarm, no latched stop.
    pub run_permit: bool,
    /// What holds the line stopped, oldest first.
    pub alarms: Vec<Alarm>,
    /// Fleet telemetry, when the box reports to a broker.
    pub telemetry: Option<TelemetryState>,
}

/// How a box's fleet telemetry is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetryState {
    /// Broker and Sparkplug ids, `mqtt://host:port as group/node` (no secret).
    pub endpoint: String,
    /// Connected, births sent.
    pub online: bool,
    /// Records on disk that the broker has not acknowledged yet.
    pub queued: u64,
    /// Records lost so far (queue full, disk write failed).
    pub dropped: u64,
}

/// A condition the technician must see. All but [`Alarm::Store`] hold the line stopped
/// (its run permit off) while they last ([`Alarm::stops_line`]); [`Alarm::LineStopped`]
/// lasts until a technician clears it, the others until their cause is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum Alarm {
    /// The camera gives no frames: which one and why.
    #[error("camera down: {0}")]
    CameraDown(String),
    /// No model could be loaded: why (flash one to repair the box).
    #[error("no model: {0}")]
    NoModel(String),
    /// The belt delay does not leave the model time to decide.
    #[error(
        "belt delay {delay_ms:.0} ms is shorter than the model's p99 latency {p99_ms:.0} ms plus the \
         {margin_ms:.0} ms margin"
    )]
    DelayTooShort {
        /// Capture → pusher delay in force (ms).
        delay_ms: f32,
        /// The model's measured 99th-percentile latency (ms).
        p99_ms: f32,
        /// `fail_safe.latency_margin_ms`.
        margin_ms: f32,
    },
    /// A part had to leave the belt and could not be pushed: why. Latched.
    #[error("line stopped: {0}")]
    LineStopped(String),
    /// The store cannot be written (full disk, read-only): flashing and camera samples
    /// fail, inspection goes on.
    #[error("store cannot be written: {0}")]
    Store(String),
}

impl Alarm {
    /// Whether the line must stand while it lasts: everything but a store problem,
    /// which does not touch inspection.
    pub fn stops_line(&self) -> bool {
        !matches!(self, Alarm::Store(_))
    }
}

/// What was done with a part, physically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartAction {
    /// Left on the belt (judged OK in time).
    Pass,
    /// Pushed off.
    Push,
    /// Could not be pushed in time: the line was stopped.
    StopLine,
}

/// Unsolicited messages from the box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// One part was inspected.
    Inspection(Inspection),
}

/// The record of one part's inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    /// Sequence number since start.
    pub part: u64,
    /// Capture time, µs since the daemon started.
    pub captured_us: u64,
    /// Anomaly score (NaN when uninspected).
    pub score: f32,
    /// Decision.
    pub verdict: Verdict,
    /// Capture-to-decision latency, µs.
    pub latency_us: u32,
    /// What was done with it.
    pub action: PartAction,
    /// Why it was not passed (the score against the threshold, the fault, the late
    /// decision); empty for a part judged OK in time.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    fn samples() -> Vec<BoxMessage> {
        vec![
            BoxMessage::Reply { id: 1, body: Ok(Reply::Hello { protocol: PROTOCOL_VERSION }) },
            BoxMessage::Reply {
                id: u32::MAX,
                body: Ok(Reply::Info(Box::new(BoxInfo {
                    firmware_version: "0.1.0".into(),
                    protocol: PROTOCOL_VERSION,
                    uptime_s: 86_400 * 365,
                    model: Some("weld-v3".into()),
                    package: PackageInfo {
                        sha256: "cd".repeat(32),
                        precision: "Int8".into(),
                        origin: "slot b".into(),
                        created_unix: 1_790_000_000,
                        signer: Some("ef".repeat(32)),
                        trusted_keys: 1,
                    },
                    threshold: 0.731,
                    source: "camera /dev/video0".into(),
                    line_stopped: true,
                    threshold_saved: true,
                    reject_delay_ms: 812.5,
                    reject_pulse_ms: 40.0,
                    reject_saved: false,
                    firmware_sha256: "ab".repeat(32),
                    firmware_state: FirmwareState::Trial,
                }))),
            },
            BoxMessage::Reply {
                id: 3,
                body: Ok(Reply::Status(Status {
                    counters: Counters { parts: u64::MAX, ng: 12, ..Counters::default() },
                    run_permit: false,
                    alarms: vec![
                        Alarm::CameraDown("/dev/video0: No such device".into()),
                        Alarm::NoModel("slot-a.kpkg is truncated".into()),
                        Alarm::DelayTooShort { delay_ms: 20.0, p99_ms: 71.5, margin_ms: 50.0 },
                        Alarm::LineStopped("part 7 decided 30 ms after its reject slot".into()),
                        Alarm::Store("/var/lib/kensa/samples: No space left on device".into()),
                    ],
                    telemetry: Some(TelemetryState {
                        endpoint: "mqtt://broker:1883 as hall-2/line3-box1".into(),
                        online: false,
                        queued: 1_234,
                        dropped: 0,
                    }),
                })),
            },
            BoxMessage::Reply {
                id: 4,
                body: Err(DeviceError::ProtocolMismatch { box_version: 1, host_version: 9 }),
            },
            BoxMessage::Reply {
                id: 5,
                body: Ok(Reply::LastNg(Some(Thumbnail {
                    inspection: Inspection {
                        part: 9,
                        captured_us: 1,
                        score: 3.5,
                        verdict: Verdict::Ng,
                        latency_us: 60_000,
                        action: PartAction::Push,
                        reason: "score 3.500 >= threshold 0.731".into(),
                    },
                    width: 64,
                    height: 64,
                    pixels: vec![7; 64 * 64],
                }))),
            },
            BoxMessage::Event(Event::Inspection(Inspection {
                part: 1 << 40,
                captured_us: 123_456_789_012,
                score: f32::NAN,
                verdict: Verdict::Uninspected,
                latency_us: 42_000,
                action: PartAction::StopLine,
                reason: "camera /dev/video0 lost".into(),
            })),
        ]
    }

    /// One request of every kind.
    fn request_samples() -> Vec<RequestBody> {
        vec![
            SessionRequest::Hello { protocol: PROTOCOL_VERSION }.into(),
            SessionRequest::Watch(true).into(),
            SessionRequest::Restart.into(),
            StationRequest::Info.into(),
            StationRequest::Status.into(),
            StationRequest::TestReject.into(),
            StationRequest::SetThreshold(-2.5).into(),
            StationRequest::SetReject { delay_ms: 640.0, pulse_ms: 35.5 }.into(),
            StationRequest::ClearLineStop.into(),
            StationRequest::LastNg(3).into(),
            StationRequest::Logs.into(),
            StationRequest::Snapshot.into(),
            FlashRequest::Begin { target: FlashTarget::Model, size: 1 << 20, sha256: "ab".repeat(32) }.into(),
            FlashRequest::Begin {
                target: FlashTarget::Firmware { signature: Some(vec![7; 96]) },
                size: 1 << 24,
                sha256: "cd".repeat(32),
            }
            .into(),
            FlashRequest::Chunk { offset: 4096, data: vec![1, 2, 3] }.into(),
            FlashRequest::Commit.into(),
        ]
    }

    /// A name per message kind. Exhaustive on purpose: a new kind does not compile until
    /// it is named here, and then [`message_layout_is_pinned_per_protocol_version`] asks
    /// for a sample of it.
    fn kind(body: &RequestBody) -> &'static str {
        match body {
            RequestBody::Session(SessionRequest::Hello { .. }) => "hello",
            RequestBody::Session(SessionRequest::Watch(_)) => "watch",
            RequestBody::Session(SessionRequest::Restart) => "restart",
            RequestBody::Station(StationRequest::Info) => "info",
            RequestBody::Station(StationRequest::Status) => "status",
            RequestBody::Station(StationRequest::TestReject) => "test-reject",
            RequestBody::Station(StationRequest::SetThreshold(_)) => "set-threshold",
            RequestBody::Station(StationRequest::SetReject { .. }) => "set-reject",
            RequestBody::Station(StationRequest::ClearLineStop) => "clear-line-stop",
            RequestBody::Station(StationRequest::LastNg(_)) => "last-ng",
            RequestBody::Station(StationRequest::Logs) => "logs",
            RequestBody::Station(StationRequest::Snapshot) => "snapshot",
            RequestBody::Flash(FlashRequest::Begin { target: FlashTarget::Model, .. }) => "flash-begin-model",
            RequestBody::Flash(FlashRequest::Begin { target: FlashTarget::Firmware { .. }, .. }) => {
                "flash-begin-firmware"
            }
            RequestBody::Flash(FlashRequest::Chunk { .. }) => "flash-chunk",
            RequestBody::Flash(FlashRequest::Commit) => "flash-commit",
        }
    }

    /// A name per box message kind, exhaustive like [`kind`].
    fn box_kind(msg: &BoxMessage) -> &'static str {
        match msg {
            BoxMessage::Reply { body: Ok(r), .. } => match r {
                Reply::Hello { .. } => "reply-hello",
                Reply::Info(_) => "reply-info",
                Reply::Status(_) => "reply-status",
                Reply::Done => "reply-done",
                Reply::LastNg(_) => "reply-last-ng",
                Reply::FlashOffset(_) => "reply-flash-offset",
                Reply::Flashed(_) => "reply-flashed",
                Reply::Logs(_) => "reply-logs",
                Reply::Snapshot(_) => "reply-snapshot",
                Reply::Restarting => "reply-restarting",
            },
            BoxMessage::Reply { body: Err(e), .. } => match e {
                DeviceError::ProtocolMismatch { .. } => "refused-protocol",
                DeviceError::NoSession => "refused-no-session",
                DeviceError::Failed(_) => "refused-failed",
            },
            BoxMessage::Event(Event::Inspection(_)) => "event-inspection",
        }
    }

    /// The bytes of every message kind at this protocol version, against the record in
    /// `shared/tests/data/wire-v<N>.txt`. A serialised type changed without a version
    /// bump fails here. After a bump, `KENSA_RECORD_WIRE=1` writes the new version's
    /// record; it never overwrites an existing one.
    #[test]
    fn message_layout_is_pinned_per_protocol_version() {
        let mut lines = Vec::new();
        for (id, body) in request_samples().into_iter().enumerate() {
            let name = kind(&body);
            lines.push(format!("{name} {}", hex(&frame::encode(&Request { id: id as u32, body }).unwrap())));
        }
        let mut replies = samples();
        replies.extend([
            BoxMessage::Reply { id: 6, body: Ok(Reply::Done) },
            BoxMessage::Reply { id: 7, body: Ok(Reply::FlashOffset(4096)) },
            BoxMessage::Reply { id: 8, body: Ok(Reply::Flashed("patchcore 256x256".into())) },
            BoxMessage::Reply { id: 9, body: Ok(Reply::Logs(vec!["one".into(), "two".into()])) },
            BoxMessage::Reply { id: 10, body: Ok(Reply::Snapshot(None)) },
            BoxMessage::Reply { id: 11, body: Ok(Reply::Restarting) },
            BoxMessage::Reply { id: 12, body: Err(DeviceError::NoSession) },
            BoxMessage::Reply { id: 13, body: Err(DeviceError::Failed("no store".into())) },
        ]);
        for msg in &replies {
            lines.push(format!("{} {}", box_kind(msg), hex(&frame::encode(msg).unwrap())));
        }
        let mut kinds: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), 16 + 14, "a sample of every request and box message kind");
        let text = lines.join("\n") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/data/wire-v{PROTOCOL_VERSION}.txt"));
        if std::env::var_os("KENSA_RECORD_WIRE").is_some() && !path.exists() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let recorded = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!("no message layout recorded for protocol {PROTOCOL_VERSION}: run with KENSA_RECORD_WIRE=1")
        });
        assert!(
            recorded == text,
            "the message layout differs from the one recorded for protocol {PROTOCOL_VERSION} \
             ({}): bump PROTOCOL_VERSION, then record the new layout with KENSA_RECORD_WIRE=1",
            path.display()
        );
    }

    #[test]
    fn every_box_message_round_trips_through_a_frame() {
        for msg in samples() {
            let bytes = frame::encode(&msg).unwrap();
            let back: BoxMessage = frame::decode(&bytes[..bytes.len() - 1]).unwrap();
            // NaN != NaN, so compare the re-encoded bytes.
            assert_eq!(frame::encode(&back).unwrap(), bytes, "{msg:?}");
        }
    }

    #[test]
    fn requests_round_trip() {
        for body in request_samples() {
            let req = Request { id: 77, body };
            let bytes = frame::encode(&req).unwrap();
            assert_eq!(frame::decode::<Request>(&bytes[..bytes.len() - 1]).unwrap(), req);
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn verdict() -> impl Strategy<Value = Verdict> {
            prop_oneof![Just(Verdict::Ok), Just(Verdict::Ng), Just(Verdict::Uninspected)]
        }

        fn inspection() -> impl Strategy<Value = Inspection> {
            let action =
                prop_oneof![Just(PartAction::Pass), Just(PartAction::Push), Just(PartAction::StopLine)];
            (any::<u64>(), any::<u64>(), any::<f32>(), verdict(), any::<u32>(), action, ".{0,40}").prop_map(
                |(part, captured_us, score, verdict, latency_us, action, reason)| Inspection {
                    part,
                    captured_us,
                    score,
                    verdict,
                    latency_us,
                    action,
                    reason,
                },
            )
        }

        fn alarm() -> impl Strategy<Value = Alarm> {
            prop_oneof![
                ".{0,40}".prop_map(Alarm::CameraDown),
                ".{0,40}".prop_map(Alarm::NoModel),
                any::<[f32; 3]>().prop_map(|[delay_ms, p99_ms, margin_ms]| Alarm::DelayTooShort {
                    delay_ms,
                    p99_ms,
                    margin_ms
                }),
                ".{0,40}".prop_map(Alarm::LineStopped),
                ".{0,40}".prop_map(Alarm::Store),
            ]
        }

        fn target() -> impl Strategy<Value = FlashTarget> {
            prop_oneof![
                Just(FlashTarget::Model),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 96))
                    .prop_map(|signature| FlashTarget::Firmware { signature }),
            ]
        }

        fn request() -> impl Strategy<Value = Request> {
            let session = prop_oneof![
                any::<u16>().prop_map(|protocol| SessionRequest::Hello { protocol }),
                any::<bool>().prop_map(SessionRequest::Watch),
                Just(SessionRequest::Restart),
            ];
            let station = prop_oneof![
                Just(StationRequest::Info),
                Just(StationRequest::Status),
                Just(StationRequest::TestReject),
                any::<f32>().prop_map(StationRequest::SetThreshold),
                Just(StationRequest::ClearLineStop),
                any::<u8>().prop_map(StationRequest::LastNg),
                Just(StationRequest::Logs),
                Just(StationRequest::Snapshot),
                (any::<f32>(), any::<f32>())
                    .prop_map(|(delay_ms, pulse_ms)| StationRequest::SetReject { delay_ms, pulse_ms }),
            ];
            let flash = prop_oneof![
                (target(), any::<u64>(), "[0-9a-f]{64}")
                    .prop_map(|(target, size, sha256)| FlashRequest::Begin { target, size, sha256 }),
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..=FLASH_CHUNK))
                    .prop_map(|(offset, data)| FlashRequest::Chunk { offset, data }),
                Just(FlashRequest::Commit),
            ];
            let body = prop_oneof![
                session.prop_map(RequestBody::from),
                station.prop_map(RequestBody::from),
                flash.prop_map(RequestBody::from),
            ];
            (any::<u32>(), body).prop_map(|(id, body)| Request { id, body })
        }

        fn thumbnail() -> impl Strategy<Value = Thumbnail> {
            (inspection(), 1u16..=64, 1u16..=64).prop_flat_map(|(inspection, width, height)| {
                proptest::collection::vec(any::<u8>(), width as usize * height as usize).prop_map(
                    move |pixels| Thumbnail { inspection: inspection.clone(), width, height, pixels },
                )
            })
        }

        fn box_message() -> impl Strategy<Value = BoxMessage> {
            let counters = proptest::collection::vec(any::<u64>(), 9).prop_map(|v| Counters {
                parts: v[0],
                ok: v[1],
                ng: v[2],
                uninspected: v[3],
                rejects: v[4],
                merged: v[5],
                late: v[6],
                overruns: v[7],
                line_stops: v[8],
            });
            let info = (
                ".{0,40}",
                any::<u64>(),
                proptest::option::of(".{0,40}"),
                any::<f32>(),
                ".{0,60}",
                (any::<[bool; 3]>(), any::<[f32; 2]>()),
                "[0-9a-f]{64}",
                prop_oneof![
                    Just(FirmwareState::Unsupervised),
                    Just(FirmwareState::Committed),
                    Just(FirmwareState::Trial)
                ],
            )
                .prop_map(
                    |(
                        firmware_version,
                        uptime_s,
                        model,
                        threshold,
                        source,
                        (flags, reject),
                        firmware_sha256,
                        state,
                    )| {
                        BoxInfo {
                            firmware_version,
                            protocol: PROTOCOL_VERSION,
                            uptime_s,
                            model,
                            package: PackageInfo {
                                sha256: firmware_sha256.clone(),
                                precision: "Fp32".into(),
                                origin: source.clone(),
                                created_unix: uptime_s,
                                signer: None,
                                trusted_keys: 3,
                            },
                            threshold,
                            source,
                            line_stopped: flags[0],
                            threshold_saved: flags[1],
                            reject_delay_ms: reject[0],
                            reject_pulse_ms: reject[1],
                            reject_saved: flags[2],
                            firmware_sha256,
                            firmware_state: state,
                        }
                    },
                );
            let error = prop_oneof![
                (any::<u16>(), any::<u16>()).prop_map(|(box_version, host_version)| {
                    DeviceError::ProtocolMismatch { box_version, host_version }
                }),
                Just(DeviceError::NoSession),
                ".{0,80}".prop_map(DeviceError::Failed),
            ];
            let reply = prop_oneof![
                any::<u16>().prop_map(|protocol| Reply::Hello { protocol }),
                info.prop_map(|i| Reply::Info(Box::new(i))),
                (
                    counters,
                    any::<bool>(),
                    proptest::collection::vec(alarm(), 0..4),
                    proptest::option::of((".{0,40}", any::<bool>(), any::<u64>(), any::<u64>())),
                )
                    .prop_map(|(counters, run_permit, alarms, t)| {
                        let telemetry = t.map(|(endpoint, online, queued, dropped)| TelemetryState {
                            endpoint,
                            online,
                            queued,
                            dropped,
                        });
                        Reply::Status(Status { counters, run_permit, alarms, telemetry })
                    }),
                Just(Reply::Done),
                proptest::option::of(thumbnail()).prop_map(Reply::LastNg),
                any::<u64>().prop_map(Reply::FlashOffset),
                ".{0,80}".prop_map(Reply::Flashed),
                proptest::collection::vec(".{0,40}", 0..20).prop_map(Reply::Logs),
                proptest::option::of(thumbnail()).prop_map(Reply::Snapshot),
                Just(Reply::Restarting),
            ];
            prop_oneof![
                (any::<u32>(), prop_oneof![reply.prop_map(Ok), error.prop_map(Err)])
                    .prop_map(|(id, body)| BoxMessage::Reply { id, body }),
                inspection().prop_map(|i| BoxMessage::Event(Event::Inspection(i))),
            ]
        }

        proptest! {
            #[test]
            fn every_request_round_trips(req in request()) {
                let bytes = frame::encode(&req).unwrap();
                prop_assert!(bytes.len() <= frame::MAX_FRAME_LEN);
                let back: Request = frame::decode(&bytes[..bytes.len() - 1]).unwrap();
                // Compare bytes: NaN thresholds are not equal to themselves.
                prop_assert_eq!(frame::encode(&back).unwrap(), bytes);
            }

            #[test]
            fn every_box_message_fits_a_frame_and_round_trips(msg in box_message()) {
                let bytes = frame::encode(&msg).unwrap();
                prop_assert!(bytes.len() <= frame::MAX_FRAME_LEN);
                let back: BoxMessage = frame::decode(&bytes[..bytes.len() - 1]).unwrap();
                prop_assert_eq!(frame::encode(&back).unwrap(), bytes);
            }

            #[test]
            fn garbage_before_a_frame_costs_only_the_garbage(
                junk in proptest::collection::vec(any::<u8>(), 0..6000),
                req in request(),
            ) {
                let mut dec = frame::FrameDecoder::new();
                let mut stream = junk;
                stream.push(0);
                stream.extend(frame::encode(&req).unwrap());
                let got = dec.push::<Request>(&stream);
                let last = got.last().unwrap().as_ref().unwrap();
                prop_assert_eq!(frame::encode(last).unwrap(), frame::encode(&req).unwrap());
                prop_assert_eq!(dec.pending(), 0);
            }
        }
    }
}
