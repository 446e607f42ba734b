//! The fleet as the broker shows it: one row per box, built from the boxes' Sparkplug
//! births, deaths and records (decoded with `kensa-shared`, as the boxes encode them).
//! Pure: messages in, rows out; `cmd::fleet` does the MQTT.

use std::collections::{BTreeMap, VecDeque};

use kensa_shared::telemetry::{Message, RecordBody};
use serde::Serialize;

/// Parts/min is counted over this window of part records.
const RATE_WINDOW_MS: u64 = 60_000;
/// A box whose data arrives with no birth seen is asked for one at most this often.
const REBIRTH_EVERY_MS: u64 = 10_000;

/// One box as the fleet view shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// Sparkplug group.
    pub group: String,
    /// Edge node (the box).
    pub node: String,
    /// Online from its birth until its death (will or clean stop).
    pub online: bool,
    /// Firmware version.
    pub firmware: String,
    /// What it runs, e.g. `patchcore 256x256, fp32`.
    pub model: String,
    /// Model package SHA-256 (first 12 hex digits).
    pub model_sha: String,
    /// Threshold in force.
    pub threshold: Option<f32>,
    /// Parts recorded in the last minute (by when they were made).
    pub parts_per_min: u64,
    /// Totals since the box started.
    pub parts: u64,
    /// NG share of the parts since the box started (%).
    pub ng_percent: Option<f64>,
    /// Parts not inspected since the box started.
    pub uninspected: u64,
    /// Active alarms.
    pub alarms: Vec<String>,
    /// Records lost on the box (its queue was full), as it reported.
    pub dropped: u64,
    /// Records missing that the box did not report as dropped: 0 unless something
    /// between the box and this view lost them.
    pub unexplained_gaps: u64,
    /// Highest record number seen.
    pub last_record: Option<u64>,
    /// When anything was last heard from it (ms since the Unix epoch).
    pub last_seen_ms: u64,
}

/// What the view should send the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Ask this box (group, node) for its births (Sparkplug rebirth NCMD).
    Rebirth(String, String),
}

#[derive(Debug, Default)]
struct Tracked {
    row: Row,
    /// A birth was seen since the view started (else the model is unknown).
    born: bool,
    rebirth_asked_ms: Option<u64>,
    /// Part records: when made, by record number order.
    recent: VecDeque<u64>,
    /// Drops reported with the highest record.
    dropped_at_last: u64,
}

/// Every box seen, by (group, node).
#[derive(Debug, Default)]
pub struct Board {
    boxes: BTreeMap<(String, String), Tracked>,
}

impl Board {
    /// Take one decoded message of box `node` in `group`, heard at `now_ms`; what to
    /// send back, if anything.
    pub fn apply(&mut self, group: &str, node: &str, message: Message, now_ms: u64) -> Option<Request> {
        let t = self.boxes.entry((group.to_string(), node.to_string())).or_insert_with(|| Tracked {
            row: Row { group: group.into(), node: node.into(), ..Row::default() },
            ..Tracked::default()
        });
        t.row.last_seen_ms = now_ms;
        match message {
            Message::NodeBirth { firmware, .. } => {
                t.row.online = true;
                t.row.firmware = firmware;
            }
            Message::NodeDeath { .. } => t.row.online = false,
            Message::DeviceBirth(b) => {
                t.born = true;
                t.row.online = true;
                t.row.model = b.model;
                t.row.model_sha = b.model_sha256.chars().take(12).collect();
                t.row.threshold = b.threshold.is_finite().then_some(b.threshold);
                t.row.firmware = b.firmware_version;
            }
            Message::Record(r) => {
                t.row.online = true;
                if t.row.last_record.is_none_or(|last| r.number > last) {
                    if let Some(last) = t.row.last_record {
                        let missing = r.number - last - 1;
                        let explained = r.dropped.saturating_sub(t.dropped_at_last);
                        t.row.unexplained_gaps += missing.saturating_sub(explained);
                    }
                    t.row.last_record = Some(r.number);
                    t.dropped_at_last = r.dropped;
                    t.row.dropped = r.dropped;
                }
                match r.body {
                    // Totals come with status records; a part counts towards the rate.
                    RecordBody::Part(_) => t.recent.push_back(r.unix_ms),
                    RecordBody::Status(s) => {
                        t.row.parts = s.counters.parts;
                        t.row.uninspected = s.counters.uninspected;
                        t.row.ng_percent = (s.counters.parts > 0)
                            .then(|| 100.0 * s.counters.ng as f64 / s.counters.parts as f64);
                        t.row.alarms = s.alarms;
                    }
                }
                if !t.born && t.rebirth_asked_ms.is_none_or(|at| now_ms >= at + REBIRTH_EVERY_MS) {
                    t.rebirth_asked_ms = Some(now_ms);
                    return Some(Request::Rebirth(group.into(), node.into()));
                }
            }
        }
        None
    }

    /// Every box, by group and node, as of `now_ms`.
    pub fn rows(&mut self, now_ms: u64) -> Vec<Row> {
        self.boxes
            .values_mut()
            .map(|t| {
                while t.recent.front().is_some_and(|&made| made + RATE_WINDOW_MS < now_ms) {
                    t.recent.pop_front();
                }
                t.row.parts_per_min = t.recent.iter().filter(|&&made| made <= now_ms).count() as u64;
                t.row.clone()
            })
            .collect()
    }
}

/// The rows as a fixed-width table with a header line.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:<7} {:<30} {:>9} {:>8} {:>6} {:>6} {:>5}  {}\n",
        "BOX", "STATE", "MODEL", "THRESHOLD", "PARTS/MIN", "NG %", "UNINSP", "GAPS", "ALARMS"
    );
    for r in rows {
        let name = format!("{}/{}", r.group, r.node);
        let model = if r.model.is_empty() { "(awaiting birth)".to_string() } else { r.model.clone() };
        let alarms = match r.alarms.as_slice() {
            [] => "-".to_string(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
        };
        out.push_str(&format!(
            "{:<24} {:<7} {:<30} {:>9} {:>8} {:>6} {:>6} {:>5}  {}\n",
            truncate(&name, 24),
            if r.online { "online" } else { "OFFLINE" },
            truncate(&model, 30),
            r.threshold.map_or("-".into(), |t| format!("{t:.4}")),
            r.parts_per_min,
            r.ng_percent.map_or("-".into(), |p| format!("{p:.1}")),
            r.uninspected,
            r.unexplained_gaps,
            alarms
        ));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['…']).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kensa_shared::telemetry::{Birth, PartRecord, Record, StatusRecord};
    use kensa_shared::verdict::Verdict;
    use kensa_shared::wire::{Counters, Inspection, PartAction};

    fn part(number: u64, dropped: u64, made: u64) -> Message {
        Message::Record(Record {
            number,
            unix_ms: made,
            dropped,
            body: RecordBody::Part(PartRecord {
                inspection: Inspection {
                    part: number,
                    captured_us: 0,
                    score: 0.1,
                    verdict: Verdict::Ok,
                    latency_us: 1000,
                    action: PartAction::Pass,
                    reason: String::new(),
                },
                inspect_us: None,
                thumbnail_png: None,
            }),
        })
    }

    fn birth() -> Message {
        Message::DeviceBirth(Birth {
            firmware_version: "0.1.0".into(),
            model: "patchcore 256x256, fp32".into(),
            model_sha256: "0123456789abcdef".repeat(4),
            precision: "Fp32".into(),
            threshold: 0.5,
            config: String::new(),
        })
    }

    #[test]
    fn a_box_goes_online_reports_and_goes_offline() {
        let mut b = Board::default();
        let now = 1_000_000;
        assert_eq!(b.apply("plant", "box-1", birth(), now), None);
        for n in 0..5 {
            b.apply("plant", "box-1", part(n, 0, now - 90_000 + n * 20_000), now);
        }
        let status = Message::Record(Record {
            number: 5,
            unix_ms: now,
            dropped: 0,
            body: RecordBody::Status(StatusRecord {
                counters: Counters { parts: 40, ng: 10, uninspected: 2, ..Counters::default() },
                alarms: vec!["camera down: /dev/video0".into()],
            }),
        });
        b.apply("plant", "box-1", status, now);
        let rows = b.rows(now);
        let r = &rows[0];
        assert!(r.online);
        assert_eq!(
            (r.model.as_str(), r.model_sha.as_str(), r.threshold),
            ("patchcore 256x256, fp32", "0123456789ab", Some(0.5))
        );
        // Made at -90, -70, -50, -30, -10 s: three in the last minute.
        assert_eq!(r.parts_per_min, 3);
        assert_eq!((r.parts, r.ng_percent, r.uninspected), (40, Some(25.0), 2));
        assert_eq!(r.alarms, ["camera down: /dev/video0"]);
        assert_eq!(r.unexplained_gaps, 0);
        b.apply("plant", "box-1", Message::NodeDeath { bd_seq: Some(1) }, now + 1);
        assert!(!b.rows(now + 1)[0].online);
        assert!(table(&b.rows(now + 1)).contains("OFFLINE"));
    }

    #[test]
    fn gaps_are_counted_unless_the_box_reported_them_as_drops() {
        let mut b = Board::default();
        b.apply("g", "n", birth(), 0);
        b.apply("g", "n", part(0, 0, 0), 0);
        // Records 1–3 dropped by the box, and said so.
        b.apply("g", "n", part(4, 3, 0), 0);
        assert_eq!(b.rows(0)[0].unexplained_gaps, 0);
        // Records 5–6 lost on the way: nobody said so.
        b.apply("g", "n", part(7, 3, 0), 0);
        // A record delivered again (at least once) changes nothing.
        b.apply("g", "n", part(4, 3, 0), 0);
        let r = &b.rows(0)[0];
        assert_eq!((r.unexplained_gaps, r.dropped, r.last_record), (2, 3, Some(7)));
    }

    #[test]
    fn a_box_heard_before_its_birth_is_asked_for_one_now_and_then() {
        let mut b = Board::default();
        let ask = Some(Request::Rebirth("g".into(), "late".into()));
        assert_eq!(b.apply("g", "late", part(10, 0, 0), 1_000), ask);
        assert_eq!(b.apply("g", "late", part(11, 0, 0), 2_000), None);
        assert_eq!(b.apply("g", "late", part(12, 0, 0), 11_000), ask);
        assert!(table(&b.rows(11_000)).contains("(awaiting birth)"));
        b.apply("g", "late", birth(), 12_000);
        assert_eq!(b.apply("g", "late", part(13, 0, 0), 30_000), None);
    }
}
