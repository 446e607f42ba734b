//! What a box reports: its birth certificates and its records, and how each maps to
//! Sparkplug metrics. The box encodes with these functions and a fleet view decodes with
//! them, so the metric names live here only.

use serde::{Deserialize, Serialize};

use super::sparkplug::{Metric, Payload};
use crate::verdict::Verdict;
use crate::wire::{Counters, Inspection, PartAction};

/// The Sparkplug device id of a box's inspection station (the box is the edge node).
pub const DEVICE: &str = "inspection";

/// Metric names. Folders (`Part/…`) group them in SCADA tag browsers.
pub mod name {
    /// Birth/death sequence of the node's MQTT sessions (Sparkplug).
    pub const BD_SEQ: &str = "bdSeq";
    /// Sparkplug's rebirth request tag.
    pub const REBIRTH: &str = "Node Control/Rebirth";
    /// Firmware version.
    pub const FIRMWARE: &str = "Properties/Firmware Version";
    /// Model description.
    pub const MODEL: &str = "Model/Description";
    /// Model package SHA-256.
    pub const MODEL_SHA256: &str = "Model/SHA256";
    /// Model precision (`Fp32`, `Int8`).
    pub const PRECISION: &str = "Model/Precision";
    /// Threshold in force.
    pub const THRESHOLD: &str = "Model/Threshold";
    /// Camera, trigger, belt and fail-safe settings in one line.
    pub const CONFIG: &str = "Properties/Configuration";
    /// Record number on this box: contiguous across restarts, so a jump is a gap.
    pub const RECORD: &str = "Telemetry/Record";
    /// Records this box lost so far (its queue was full): a jump in
    /// [`RECORD`] of this size is accounted for.
    pub const DROPPED: &str = "Telemetry/Dropped";
    /// When the record was made (the metric timestamps say so too).
    pub const MADE: &str = "Telemetry/Made";
    /// Part number since the daemon started.
    pub const PART: &str = "Part/Number";
    /// Capture time, µs since the daemon started.
    pub const CAPTURED: &str = "Part/Captured us";
    /// Anomaly score (null when uninspected).
    pub const SCORE: &str = "Part/Score";
    /// `OK`, `NG` or `UNINSPECTED`.
    pub const VERDICT: &str = "Part/Verdict";
    /// `pass`, `push` or `line stop`.
    pub const ACTION: &str = "Part/Action";
    /// Why the part was not passed; empty when judged OK in time.
    pub const REASON: &str = "Part/Reason";
    /// Capture → decision latency (ms).
    pub const LATENCY: &str = "Part/Latency ms";
    /// Preprocessing and inference (ms; null when the part was not scored).
    pub const INSPECT: &str = "Part/Inspect ms";
    /// PNG thumbnail of an NG part (rate-limited).
    pub const THUMBNAIL: &str = "Part/Thumbnail";
    /// Counter folder.
    pub const PARTS: &str = "Counters/Parts";
    /// Parts judged OK.
    pub const OK: &str = "Counters/OK";
    /// Parts judged NG.
    pub const NG: &str = "Counters/NG";
    /// Parts not inspected.
    pub const UNINSPECTED: &str = "Counters/Uninspected";
    /// Decisions after their reject slot.
    pub const LATE: &str = "Counters/Late";
    /// Parts pushed off.
    pub const REJECTS: &str = "Counters/Rejects";
    /// Times the line was stopped.
    pub const LINE_STOPS: &str = "Counters/Line Stops";
    /// Active alarms, one per line; empty when none.
    pub const ALARMS: &str = "Alarms/Active";
}

/// What a box says when it comes online: the DBIRTH of its inspection device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Birth {
    /// `kensa-fw` version.
    pub firmware_version: String,
    /// What runs, e.g. `patchcore 256x256, fp32`; "none" when no model loaded.
    pub model: String,
    /// SHA-256 of the model package.
    pub model_sha256: String,
    /// `Fp32`, `Int8`.
    pub precision: String,
    /// Threshold in force.
    pub threshold: f32,
    /// Settings summary (camera, trigger, belt timing, fail-safe policy).
    pub config: String,
}

/// One entry of a box's telemetry: numbered, stamped, queued on disk until the broker
/// has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Record number on this box (see [`name::RECORD`]).
    pub number: u64,
    /// When it was made (ms since the Unix epoch).
    pub unix_ms: u64,
    /// Records lost on this box so far (see [`name::DROPPED`]).
    pub dropped: u64,
    /// What it reports.
    pub body: RecordBody,
}

/// What a record reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordBody {
    /// One part.
    Part(PartRecord),
    /// Totals and alarms, when they change and periodically.
    Status(StatusRecord),
}

/// One part's inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The decision, as the serial link reports it.
    pub inspection: Inspection,
    /// Preprocessing and inference (µs), when scored.
    pub inspect_us: Option<u32>,
    /// PNG thumbnail (NG parts, rate-limited).
    pub thumbnail_png: Option<Vec<u8>>,
}

/// Totals and alarms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Totals since start.
    pub counters: Counters,
    /// Active alarms, as the technician reads them.
    pub alarms: Vec<String>,
}

/// A message a fleet view understands, decoded from a Sparkplug payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// NBIRTH: a box came online.
    NodeBirth {
        /// Session number (matches the later NDEATH).
        bd_seq: u64,
        /// Firmware version.
        firmware: String,
    },
    /// NDEATH: a box went offline (its last will, or a clean stop).
    NodeDeath {
        /// Session that ended.
        bd_seq: Option<u64>,
    },
    /// DBIRTH of the inspection device.
    DeviceBirth(Birth),
    /// DDATA of the inspection device.
    Record(Record),
}

fn counters_metrics(c: &Counters, out: &mut Vec<Metric>) {
    out.extend([
        Metric::u64(name::PARTS, c.parts),
        Metric::u64(name::OK, c.ok),
        Metric::u64(name::NG, c.ng),
        Metric::u64(name::UNINSPECTED, c.uninspected),
        Metric::u64(name::LATE, c.late),
        Metric::u64(name::REJECTS, c.rejects),
        Metric::u64(name::LINE_STOPS, c.line_stops),
    ]);
}

fn action_str(a: PartAction) -> &'static str {
    match a {
        PartAction::Pass => "pass",
        PartAction::Push => "push",
        PartAction::StopLine => "line stop",
    }
}

impl Birth {
    /// NBIRTH payload of session `bd_seq` (Sparkplug: seq 0, bdSeq, the rebirth tag).
    pub fn node_payload(&self, bd_seq: u64, unix_ms: u64) -> Payload {
        Payload {
            timestamp: Some(unix_ms),
            seq: Some(0),
            metrics: vec![
                Metric::u64(name::BD_SEQ, bd_seq),
                Metric::bool(name::REBIRTH, false),
                Metric::string(name::FIRMWARE, &self.firmware_version),
            ],
            ..Payload::default()
        }
    }

    /// DBIRTH payload: the model and settings, and every metric the device's DDATA
    /// carries, as Sparkplug asks, with null or zero values.
    pub fn device_payload(&self, seq: u64, unix_ms: u64) -> Payload {
        let mut metrics = vec![
            Metric::string(name::FIRMWARE, &self.firmware_version),
            Metric::string(name::MODEL, &self.model),
            Metric::string(name::MODEL_SHA256, &self.model_sha256),
            Metric::string(name::PRECISION, &self.precision),
            Metric::f32(name::THRESHOLD, Some(self.threshold)),
            Metric::string(name::CONFIG, &self.config),
            Metric::u64(name::RECORD, 0),
            Metric::u64(name::DROPPED, 0),
            Metric::datetime(name::MADE, unix_ms),
            Metric::u64(name::PART, 0),
            Metric::u64(name::CAPTURED, 0),
            Metric::f32(name::SCORE, None),
            Metric::string(name::VERDICT, ""),
            Metric::string(name::ACTION, ""),
            Metric::string(name::REASON, ""),
            Metric::f32(name::LATENCY, None),
            Metric::f32(name::INSPECT, None),
            Metric::string(name::ALARMS, ""),
        ];
        counters_metrics(&Counters::default(), &mut metrics);
        Payload { timestamp: Some(unix_ms), seq: Some(seq), metrics, ..Payload::default() }
    }

    fn from_payload(p: &Payload) -> Option<Self> {
        let s = |n| p.metric(n).and_then(Metric::as_str).map(str::to_string);
        Some(Self {
            firmware_version: s(name::FIRMWARE).unwrap_or_default(),
            model: s(name::MODEL)?,
            model_sha256: s(name::MODEL_SHA256).unwrap_or_default(),
            precision: s(name::PRECISION).unwrap_or_default(),
            threshold: p.metric(name::THRESHOLD).and_then(Metric::as_f64).unwrap_or(f64::NAN) as f32,
            config: s(name::CONFIG).unwrap_or_default(),
        })
    }
}

/// NDEATH payload of session `bd_seq`: the MQTT last will the broker sends when the
/// box vanishes.
pub fn death_payload(bd_seq: u64) -> Payload {
    Payload { metrics: vec![Metric::u64(name::BD_SEQ, bd_seq)], ..Payload::default() }
}

/// NCMD payload asking a box to send its births again: what a fleet view that joined
/// after the box came online sends, as Sparkplug prescribes.
pub fn rebirth_request(unix_ms: u64) -> Payload {
    Payload {
        timestamp: Some(unix_ms),
        metrics: vec![Metric::bool(name::REBIRTH, true)],
        ..Payload::default()
    }
}

/// Whether an NCMD payload asks for the births again.
pub fn is_rebirth_request(p: &Payload) -> bool {
    p.metric(name::REBIRTH).and_then(Metric::as_bool) == Some(true)
}

impl Record {
    /// DDATA payload with message sequence `seq`; `historical` when it is delivered late
    /// (from the queue, after an outage), so historians file it at its own time.
    pub fn payload(&self, seq: u64, now_unix_ms: u64, historical: bool) -> Payload {
        let mut metrics = vec![
            Metric::u64(name::RECORD, self.number),
            Metric::u64(name::DROPPED, self.dropped),
            Metric::datetime(name::MADE, self.unix_ms),
        ];
        match &self.body {
            RecordBody::Part(p) => {
                let i = &p.inspection;
                metrics.extend([
                    Metric::u64(name::PART, i.part),
                    Metric::u64(name::CAPTURED, i.captured_us),
                    Metric::f32(name::SCORE, i.score.is_finite().then_some(i.score)),
                    Metric::string(name::VERDICT, i.verdict.as_str()),
                    Metric::string(name::ACTION, action_str(i.action)),
                    Metric::string(name::REASON, &i.reason),
                    Metric::f32(name::LATENCY, Some(i.latency_us as f32 / 1e3)),
                    Metric::f32(name::INSPECT, p.inspect_us.map(|us| us as f32 / 1e3)),
                ]);
                if let Some(png) = &p.thumbnail_png {
                    metrics.push(Metric::bytes(name::THUMBNAIL, png.clone()));
                }
            }
            RecordBody::Status(s) => {
                counters_metrics(&s.counters, &mut metrics);
                metrics.push(Metric::string(name::ALARMS, s.alarms.join("\n")));
            }
        }
        for m in &mut metrics {
            m.timestamp = Some(self.unix_ms);
            m.is_historical = historical.then_some(true);
        }
        Payload { timestamp: Some(now_unix_ms), seq: Some(seq), metrics, ..Payload::default() }
    }

    fn from_payload(p: &Payload) -> Option<Self> {
        let u = |n| p.metric(n).and_then(Metric::as_u64);
        let f = |n| p.metric(n).and_then(Metric::as_f64);
        let s = |n| p.metric(n).and_then(Metric::as_str).map(str::to_string);
        let body = if let Some(verdict) = s(name::VERDICT) {
            let verdict = match verdict.as_str() {
                "OK" => Verdict::Ok,
                "NG" => Verdict::Ng,
                _ => Verdict::Uninspected,
            };
            let action = match s(name::ACTION).as_deref() {
                Some("pass") => PartAction::Pass,
                Some("push") => PartAction::Push,
                _ => PartAction::StopLine,
            };
            RecordBody::Part(PartRecord {
                inspection: Inspection {
                    part: u(name::PART)?,
                    captured_us: u(name::CAPTURED).unwrap_or(0),
                    score: f(name::SCORE).map_or(f32::NAN, |v| v as f32),
                    verdict,
                    latency_us: f(name::LATENCY).map_or(0, |ms| (ms * 1e3).round() as u32),
                    action,
                    reason: s(name::REASON).unwrap_or_default(),
                },
                inspect_us: f(name::INSPECT).map(|ms| (ms * 1e3).round() as u32),
                thumbnail_png: p.metric(name::THUMBNAIL).and_then(|m| match &m.value {
                    Some(super::sparkplug::Value::Bytes(b)) => Some(b.clone()),
                    _ => None,
                }),
            })
        } else {
            RecordBody::Status(StatusRecord {
                counters: Counters {
                    parts: u(name::PARTS)?,
                    ok: u(name::OK).unwrap_or(0),
                    ng: u(name::NG).unwrap_or(0),
                    uninspected: u(name::UNINSPECTED).unwrap_or(0),
                    late: u(name::LATE).unwrap_or(0),
                    rejects: u(name::REJECTS).unwrap_or(0),
                    line_stops: u(name::LINE_STOPS).unwrap_or(0),
                    ..Counters::default()
                },
                alarms: s(name::ALARMS).map(|a| a.lines().map(str::to_string).collect()).unwrap_or_default(),
            })
        };
        Some(Self {
            number: u(name::RECORD)?,
            unix_ms: p.metric(name::MADE).and_then(Metric::as_u64).unwrap_or(0),
            dropped: u(name::DROPPED).unwrap_or(0),
            body,
        })
    }
}

/// What `payload` on a topic of `message` type says, when it is a message of a Kensa
/// box; `None` for other publishers' messages and malformed ones.
pub fn decode(message: super::topic::MessageType, payload: &Payload) -> Option<Message> {
    use super::topic::MessageType as T;
    match message {
        T::NBirth => Some(Message::NodeBirth {
            bd_seq: payload.metric(name::BD_SEQ)?.as_u64()?,
            firmware: payload.metric(name::FIRMWARE).and_then(Metric::as_str).unwrap_or("").into(),
        }),
        T::NDeath => {
            Some(Message::NodeDeath { bd_seq: payload.metric(name::BD_SEQ).and_then(Metric::as_u64) })
        }
        T::DBirth => Birth::from_payload(payload).map(Message::DeviceBirth),
        T::DData => Record::from_payload(payload).map(Message::Record),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::topic::MessageType;

    fn part(n: u64, verdict: Verdict, score: f32) -> Record {
        Record {
            number: 40 + n,
            unix_ms: 1_795_000_000_000 + n,
            dropped: 2,
            body: RecordBody::Part(PartRecord {
                inspection: Inspection {
                    part: n,
                    captured_us: 1_000_000 * n,
                    score,
                    verdict,
                    latency_us: 48_250,
                    action: if verdict == Verdict::Ok { PartAction::Pass } else { PartAction::Push },
                    reason: if verdict == Verdict::Ok { String::new() } else { "camera down".into() },
                },
                inspect_us: score.is_finite().then_some(31_500),
                thumbnail_png: (verdict == Verdict::Ng).then(|| vec![0x89, b'P', b'N', b'G']),
            }),
        }
    }

    fn through_the_wire(p: &Payload) -> Payload {
        Payload::decode(&p.encode()).unwrap()
    }

    #[test]
    fn part_and_status_records_decode_to_what_was_sent() {
        let status = Record {
            number: 7,
            unix_ms: 1_795_000_000_000,
            dropped: 0,
            body: RecordBody::Status(StatusRecord {
                counters: Counters {
                    parts: 9,
                    ok: 5,
                    ng: 3,
                    uninspected: 1,
                    rejects: 4,
                    ..Counters::default()
                },
                alarms: vec!["camera down: /dev/video0".into(), "store cannot be written: full".into()],
            }),
        };
        for r in [part(1, Verdict::Ok, 0.25), part(2, Verdict::Ng, 0.75), status] {
            let p = through_the_wire(&r.payload(9, 1_795_000_000_500, true));
            assert_eq!(p.seq, Some(9));
            assert!(
                p.metrics.iter().all(|m| m.is_historical == Some(true) && m.timestamp == Some(r.unix_ms))
            );
            assert_eq!(decode(MessageType::DData, &p), Some(Message::Record(r)));
        }
    }

    #[test]
    fn an_uninspected_part_has_a_null_score() {
        let r = part(3, Verdict::Uninspected, f32::NAN);
        let p = through_the_wire(&r.payload(0, 0, false));
        assert_eq!(p.metric(name::SCORE).unwrap().is_null, Some(true));
        assert_eq!(p.metric(name::INSPECT).unwrap().is_null, Some(true));
        let Some(Message::Record(back)) = decode(MessageType::DData, &p) else { panic!("not a record") };
        let RecordBody::Part(back) = back.body else { panic!("not a part") };
        assert!(back.inspection.score.is_nan());
        assert_eq!(back.inspection.verdict, Verdict::Uninspected);
    }

    #[test]
    fn births_and_deaths_carry_the_session_and_the_model() {
        let b = Birth {
            firmware_version: "0.1.0".into(),
            model: "patchcore 256x256, fp32".into(),
            model_sha256: "ab".repeat(32),
            precision: "Fp32".into(),
            threshold: 0.5,
            config: "synthetic camera; belt 800 ms".into(),
        };
        let n = through_the_wire(&b.node_payload(5, 1));
        assert_eq!(n.seq, Some(0));
        assert_eq!(
            decode(MessageType::NBirth, &n),
            Some(Message::NodeBirth { bd_seq: 5, firmware: "0.1.0".into() })
        );
        let d = through_the_wire(&b.device_payload(1, 1));
        // Sparkplug: the birth declares every metric a later DDATA carries.
        let declared: Vec<_> = d.metrics.iter().map(Metric::name).collect();
        for r in [
            part(1, Verdict::Ok, 0.1),
            Record { body: RecordBody::Status(StatusRecord::default()), ..part(0, Verdict::Ok, 0.0) },
        ] {
            for m in r.payload(2, 1, false).metrics.iter().filter(|m| m.name() != name::THUMBNAIL) {
                assert!(declared.contains(&m.name()), "{} is not in the DBIRTH", m.name());
            }
        }
        assert_eq!(decode(MessageType::DBirth, &d), Some(Message::DeviceBirth(b)));
        assert_eq!(
            decode(MessageType::NDeath, &through_the_wire(&death_payload(5))),
            Some(Message::NodeDeath { bd_seq: Some(5) })
        );
        assert_eq!(decode(MessageType::DData, &Payload::default()), None);
        assert!(is_rebirth_request(&through_the_wire(&rebirth_request(1))));
        assert!(!is_rebirth_request(&n), "the NBIRTH declares the tag false");
    }
}
