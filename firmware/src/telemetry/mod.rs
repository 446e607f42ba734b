//! Fleet telemetry: the box as a Sparkplug B edge node on the plant's MQTT broker.
//!
//! The line never waits on the network or the disk: it hands each decision to
//! [`Telemetry`] (a bounded channel, `try_send`), and one thread of its own writes the
//! records to the [`spool`] on disk and sends them from there, in order, QoS 1, to the
//! broker ([`session`]). A record leaves the spool only when the broker acknowledged
//! it, so a broker outage, a daemon kill or a power cut delays records but does not lose
//! them; a spool that outgrows its limit drops the oldest and counts them, and every
//! record carries the count so a subscriber can tell a counted drop from a gap.

pub mod session;
pub mod spool;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};

use image::RgbImage;
use kensa_shared::telemetry::{Birth, PartRecord, RecordBody, StatusRecord};

pub use session::{Endpoint, EndpointError};

/// Parts and status changes waiting for the telemetry thread. At 100 parts/s this is
/// 40 s of backlog while the thread waits for a slow connect or a slow disk.
const CHANNEL: usize = 4096;

/// What the line hands over.
#[derive(Debug)]
enum Item {
    Record(RecordBody),
    /// A part with its thumbnail, encoded on the telemetry thread.
    WithThumbnail(PartRecord, RgbImage),
    /// What the box runs changed (a model was flashed): births again.
    Birth(Box<Birth>),
}

/// How the telemetry thread is doing, for logs and the serial link.
#[derive(Debug, Default)]
pub struct State {
    /// Connected to the broker with births sent.
    pub online: AtomicBool,
    /// Records lost so far (queue full, channel full, disk write failed).
    pub dropped: AtomicU64,
    /// Records written and not yet acknowledged by the broker.
    pub backlog: AtomicU64,
}

/// The line's end: hand decisions over without waiting.
#[derive(Debug)]
pub struct Telemetry {
    tx: SyncSender<Item>,
    /// Items the channel had no room for (counted into the records' drop count).
    lost: Arc<AtomicU64>,
    state: Arc<State>,
    thumbnails: Thumbnails,
    /// Broker and ids, for the serial link's status.
    endpoint: String,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// At most `per_minute` thumbnails, spaced evenly.
#[derive(Debug)]
struct Thumbnails {
    gap_us: Option<u64>,
    last_us: Option<u64>,
}

impl Thumbnails {
    fn allow(&mut self, now_us: u64) -> bool {
        let Some(gap) = self.gap_us else { return false };
        if self.last_us.is_some_and(|t| now_us < t + gap) {
            return false;
        }
        self.last_us = Some(now_us);
        true
    }
}

impl Telemetry {
    /// Start the telemetry thread: records spooled in `spool_dir` (at most `max_bytes`),
    /// sent to `endpoint` announcing `birth`.
    pub fn start(
        endpoint: Endpoint,
        spool_dir: &std::path::Path,
        max_bytes: u64,
        birth: Birth,
        thumbnails_per_minute: u32,
    ) -> Result<Self, spool::SpoolError> {
        let spool = spool::Spool::open(spool_dir, max_bytes)?;
        let url = kensa_shared::telemetry::BrokerUrl {
            host: endpoint.host.clone(),
            port: endpoint.port,
            tls: endpoint.tls.is_some(),
        };
        let described = format!("{url} as {}/{}", endpoint.group, endpoint.node);
        let (tx, rx) = mpsc::sync_channel(CHANNEL);
        let lost = Arc::new(AtomicU64::new(0));
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = session::Worker::new(endpoint, spool, birth, rx, Arc::clone(&lost), Arc::clone(&state));
        let worker_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kensa-telemetry".into())
            .spawn(move || worker.run(&worker_stop))
            .expect("spawning the telemetry thread");
        let gap_us = (thumbnails_per_minute > 0).then(|| 60_000_000 / u64::from(thumbnails_per_minute));
        Ok(Self {
            tx,
            lost,
            state,
            thumbnails: Thumbnails { gap_us, last_us: None },
            endpoint: described,
            thread: Some(thread),
            stop,
        })
    }

    fn send(&self, item: Item) {
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// One part was decided.
    pub fn part(&mut self, r: &crate::station::PartResult) {
        let record = PartRecord {
            inspection: r.inspection(),
            inspect_us: r.inspect_us.map(|us| us.min(u64::from(u32::MAX)) as u32),
            thumbnail_png: None,
        };
        match &r.thumbnail {
            Some(t)
                if r.verdict == kensa_shared::verdict::Verdict::Ng && self.thumbnails.allow(r.decided_us) =>
            {
                self.send(Item::WithThumbnail(record, t.clone()))
            }
            _ => self.send(Item::Record(RecordBody::Part(record))),
        }
    }

    /// What the box runs changed: announce it with new births.
    pub fn rebirth(&self, birth: Birth) {
        self.send(Item::Birth(Box::new(birth)));
    }

    /// The totals or alarms changed.
    pub fn status(&self, status: StatusRecord) {
        self.send(Item::Record(RecordBody::Status(status)));
    }

    /// How the thread is doing.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// How it is doing, as the serial link's status reports it.
    pub fn link_state(&self) -> kensa_shared::wire::TelemetryState {
        kensa_shared::wire::TelemetryState {
            endpoint: self.endpoint.clone(),
            online: self.state.online.load(Ordering::Relaxed),
            queued: self.state.backlog.load(Ordering::Relaxed),
            dropped: self.state.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Telemetry {
    /// Flush: the thread writes what the channel holds, says goodbye (NDEATH) and ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
