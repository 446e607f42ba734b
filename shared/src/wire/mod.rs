//! The serial protocol between `kensa` (host) and `kensa-fw` (box).
//!
//! Every message both sides exchange is declared here once; a new message is one edit and
//! a side that lags behind fails to compile. [`frame`] turns messages into bytes.
//!
//! Conversation: the host opens with [`RequestBody::Hello`]; the box answers with its own
//! [`PROTOCOL_VERSION`] and refuses (with [`DeviceError::ProtocolMismatch`]) anything else
//! until versions agree. Each request carries an `id` the reply echoes, so a reply that
//! arrives after a retry is matched to the right request. The box may also send
//! [`BoxMessage::Event`]s at any time (results stream).

pub mod frame;

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

/// Version of the message layout in this module. Bump on any change to a serialised type.
pub const PROTOCOL_VERSION: u16 = 5;

/// Largest `data` in one [`RequestBody::FlashChunk`] (fits one frame with its header).
pub const FLASH_CHUNK: usize = 4096;

/// A message from the host to the box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the host, echoed in the reply.
    pub id: u32,
    /// What is asked.
    pub body: RequestBody,
}

/// What the host can ask of a box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Open a session; `protocol` is the host's [`PROTOCOL_VERSION`].
    Hello {
        /// The host's protocol version.
        protocol: u16,
    },
    /// Versions, model, uptime, configuration summary.
    Info,
    /// Live counters.
    Status,
    /// Fire the reject output once, for wiring checks.
    TestReject,
    /// Start (`true`) or stop streaming an [`Event::Inspection`] per part.
    Watch(bool),
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
    /// Start (or resume) uploading a model package or a firmware binary; the box answers
    /// with the bytes it already holds of this very upload.
    FlashBegin {
        /// What the bytes are.
        target: FlashTarget,
        /// Upload size (bytes).
        size: u64,
        /// Lower-case hex SHA-256 of the package.
        sha256: String,
    },
    /// Package bytes from `offset` (at most [`FLASH_CHUNK`]).
    FlashChunk {
        /// Where `data` starts in the package.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Verify the upload and switch to it: a model (size, hash, signature, load,
    /// self-test) between two parts; a firmware (size, hash, signature, architecture)
    /// by restarting into it on trial.
    FlashCommit,
    /// Rebuild the pipeline: reopen the camera and outputs, reload the active model and
    /// the saved settings. Parts passing meanwhile are not inspected.
    Restart,
    /// The newest log lines (as many as fit one frame).
    Logs,
    /// A thumbnail of the latest frame the camera delivered, whatever its verdict.
    Snapshot,
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
    /// Answer to [`RequestBody::Hello`].
    Hello {
        /// The box's protocol version.
        protocol: u16,
    },
    /// Answer to [`RequestBody::Info`].
    Info(BoxInfo),
    /// Answer to [`RequestBody::Status`].
    Status(Counters),
    /// The request was carried out and has nothing to report.
    Done,
    /// Answer to [`RequestBody::LastNg`]: `None` when fewer rejected parts are kept.
    LastNg(Option<Thumbnail>),
    /// Bytes of the upload the box holds (answer to `FlashBegin` and `FlashChunk`).
    FlashOffset(u64),
    /// The box now inspects with the flashed model (its description).
    Flashed(String),
    /// Answer to [`RequestBody::Logs`], oldest first.
    Logs(Vec<String>),
    /// Answer to [`RequestBody::Snapshot`]: `None` before the first frame.
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
    /// The request needs a [`RequestBody::Hello`] first.
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
    /// Current decision threshold.
    pub threshold: f32,
    /// Frame source, as the daemon describes it.
    pub source: String,
    /// Whether the line-stop output is raised.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<BoxMessage> {
        vec![
            BoxMessage::Reply { id: 1, body: Ok(Reply::Hello { protocol: PROTOCOL_VERSION }) },
            BoxMessage::Reply {
                id: u32::MAX,
                body: Ok(Reply::Info(BoxInfo {
                    firmware_version: "0.1.0".into(),
                    protocol: PROTOCOL_VERSION,
                    uptime_s: 86_400 * 365,
                    model: Some("weld-v3".into()),
                    threshold: 0.731,
                    source: "camera /dev/video0".into(),
                    line_stopped: true,
                    threshold_saved: true,
                    reject_delay_ms: 812.5,
                    reject_pulse_ms: 40.0,
                    reject_saved: false,
                    firmware_sha256: "ab".repeat(32),
                    firmware_state: FirmwareState::Trial,
                })),
            },
            BoxMessage::Reply {
                id: 3,
                body: Ok(Reply::Status(Counters { parts: u64::MAX, ng: 12, ..Counters::default() })),
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
            })),
        ]
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
        for body in [
            RequestBody::Hello { protocol: PROTOCOL_VERSION },
            RequestBody::Info,
            RequestBody::Status,
            RequestBody::TestReject,
            RequestBody::Watch(true),
            RequestBody::SetThreshold(-2.5),
            RequestBody::ClearLineStop,
            RequestBody::LastNg(3),
            RequestBody::Restart,
            RequestBody::SetReject { delay_ms: 640.0, pulse_ms: 35.5 },
            RequestBody::FlashBegin {
                target: FlashTarget::Firmware { signature: Some(vec![7; 96]) },
                size: 1 << 24,
                sha256: "cd".repeat(32),
            },
        ] {
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
            (any::<u64>(), any::<u64>(), any::<f32>(), verdict(), any::<u32>()).prop_map(
                |(part, captured_us, score, verdict, latency_us)| Inspection {
                    part,
                    captured_us,
                    score,
                    verdict,
                    latency_us,
                },
            )
        }

        fn target() -> impl Strategy<Value = FlashTarget> {
            prop_oneof![
                Just(FlashTarget::Model),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 96))
                    .prop_map(|signature| FlashTarget::Firmware { signature }),
            ]
        }

        fn request() -> impl Strategy<Value = Request> {
            let body = prop_oneof![
                any::<u16>().prop_map(|protocol| RequestBody::Hello { protocol }),
                Just(RequestBody::Info),
                Just(RequestBody::Status),
                Just(RequestBody::TestReject),
                any::<bool>().prop_map(RequestBody::Watch),
                any::<f32>().prop_map(RequestBody::SetThreshold),
                Just(RequestBody::ClearLineStop),
                any::<u8>().prop_map(RequestBody::LastNg),
                (target(), any::<u64>(), "[0-9a-f]{64}")
                    .prop_map(|(target, size, sha256)| RequestBody::FlashBegin { target, size, sha256 }),
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..=FLASH_CHUNK))
                    .prop_map(|(offset, data)| RequestBody::FlashChunk { offset, data }),
                Just(RequestBody::FlashCommit),
                Just(RequestBody::Logs),
                Just(RequestBody::Snapshot),
                Just(RequestBody::Restart),
                (any::<f32>(), any::<f32>())
                    .prop_map(|(delay_ms, pulse_ms)| RequestBody::SetReject { delay_ms, pulse_ms }),
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
                info.prop_map(Reply::Info),
                counters.prop_map(Reply::Status),
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
