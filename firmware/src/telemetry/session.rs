//! The telemetry thread: spool what the line hands over, and keep a Sparkplug session
//! with the broker that sends the spool in order.
//!
//! One MQTT connection is one Sparkplug session: its CONNECT leaves an NDEATH with a new
//! `bdSeq` as the last will, its CONNACK is answered with NBIRTH and DBIRTH (`seq` 0 and
//! 1), then records go as DDATA, QoS 1, at most [`WINDOW`] unacknowledged. When the
//! connection fails, what was not acknowledged is sent again in the next session (at
//! least once), after a back-off.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use kensa_shared::telemetry::records::{self, DEVICE};
use kensa_shared::telemetry::{Birth, MessageType, PartRecord, RecordBody, Topic};
use rumqttc::{Client, Connection, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS, Transport};

use super::spool::Spool;
use super::{Item, State};

/// DDATA records in flight (sent, not acknowledged). Below rumqttc's packet-id window,
/// so packet ids never collide and acknowledgements map back to records in order.
pub const WINDOW: usize = 64;
/// rumqttc's in-flight limit (and packet-id range).
const INFLIGHT: u16 = 100;
/// A record delivered later than this after it was made is flagged historical.
const HISTORICAL_MS: u64 = 10_000;
/// Longest wait between connection attempts: a box is back within this (plus up to a
/// quarter more, at random, so a fleet does not reconnect in lock-step after a broker
/// restart) of its broker.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Where and as whom to connect. `Debug` shows no secret.
#[derive(Clone)]
pub struct Endpoint {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS settings, for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// Sparkplug group.
    pub group: String,
    /// Sparkplug edge node (this box).
    pub node: String,
    /// MQTT keep-alive: how soon the broker declares the box dead.
    pub keep_alive: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("group", &self.group)
            .field("node", &self.node)
            .finish()
    }
}

/// Why `[telemetry]` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The broker address is not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error("telemetry.{0}")]
    Broker(#[from] kensa_shared::telemetry::broker::BadBrokerUrl),
    /// A group or node id that cannot be a topic element.
    #[error("telemetry: {0}")]
    Id(#[from] kensa_shared::telemetry::topic::BadId),
    /// A file named in `[telemetry]` cannot be read.
    #[error("telemetry.{key} {path}: {source}")]
    File {
        /// The key naming it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("telemetry.{key} {path}: {why}")]
    Pem {
        /// The key naming it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn read_file(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, EndpointError> {
    std::fs::read(path).map_err(|source| EndpointError::File { key, path: path.into(), source })
}

impl Endpoint {
    /// From the configuration: the broker address parsed, secrets and certificates read.
    pub fn from_config(c: &crate::config::Telemetry) -> Result<Self, EndpointError> {
        kensa_shared::telemetry::topic::check_id("telemetry.group", &c.group)?;
        kensa_shared::telemetry::topic::check_id("telemetry.node", &c.node)?;
        let url: kensa_shared::telemetry::BrokerUrl = c.broker.parse()?;
        let password = match &c.password_file {
            Some(p) => {
                let text = read_file("password_file", p)?;
                Some(String::from_utf8_lossy(&text).lines().next().unwrap_or("").to_string())
            }
            None => None,
        };
        let credentials = c.username.clone().map(|u| (u, password.unwrap_or_default()));
        let tls = if url.tls { Some(Arc::new(tls_config(c)?)) } else { None };
        Ok(Self {
            host: url.host,
            port: url.port,
            tls,
            credentials,
            group: c.group.clone(),
            node: c.node.clone(),
            keep_alive: Duration::from_secs(10),
        })
    }

    fn topic(&self, message: MessageType) -> String {
        if message.is_device() {
            Topic::device(&self.group, message, &self.node, DEVICE).to_string()
        } else {
            Topic::node(&self.group, message, &self.node).to_string()
        }
    }

    fn options(&self, bd_seq: u64) -> MqttOptions {
        let mut o = MqttOptions::new(format!("kensa-{}-{}", self.group, self.node), &self.host, self.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(true)
            .set_inflight(INFLIGHT)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_last_will(LastWill::new(
                self.topic(MessageType::NDeath),
                records::death_payload(bd_seq).encode(),
                QoS::AtLeastOnce,
                false,
            ));
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u, p);
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::clone(tls))));
        }
        o
    }
}

/// A rustls client configuration (ring provider: pure Rust and assembly, no CMake, so
/// it cross-builds for the box like the rest) from `ca_file` or the system roots, with
/// the client certificate when one is named.
fn tls_config(c: &crate::config::Telemetry) -> Result<rustls::ClientConfig, EndpointError> {
    let pem = |key: &'static str, path: &std::path::Path, why: String| EndpointError::Pem {
        key,
        path: path.into(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &c.ca_file {
        Some(path) => {
            let bytes = read_file("ca_file", path)?;
            for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
                let cert = cert.map_err(|e| pem("ca_file", path, e.to_string()))?;
                roots.add(cert).map_err(|e| pem("ca_file", path, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(pem("ca_file", path, "no PEM certificate in it".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots);
    match (&c.client_cert, &c.client_key) {
        (Some(cert), Some(key)) => {
            let chain = rustls_pemfile::certs(&mut read_file("client_cert", cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem("client_cert", cert, e.to_string()))?;
            let private = rustls_pemfile::private_key(&mut read_file("client_key", key)?.as_slice())
                .map_err(|e| pem("client_key", key, e.to_string()))?
                .ok_or_else(|| pem("client_key", key, "no PEM private key in it".into()))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| pem("client_key", key, e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), None) => Err(pem("client_cert", cert, "needs telemetry.client_key too".into())),
        (None, Some(key)) => Err(pem("client_key", key, "needs telemetry.client_cert too".into())),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The telemetry thread's state.
pub(super) struct Worker {
    endpoint: Endpoint,
    spool: Spool,
    birth: Birth,
    rx: Receiver<Item>,
    lost: Arc<AtomicU64>,
    lost_counted: u64,
    state: Arc<State>,
    bd_seq_path: PathBuf,
    /// Session number of the current (or last) connection.
    bd_seq: u64,
    /// Births to send again (asked for by a host, or the model changed).
    rebirth: bool,
    /// Sends failing in a row (for the back-off and for not flooding the log).
    failures: u32,
}

/// One connection.
struct Session {
    client: Client,
    connection: Connection,
    connected: bool,
    /// Sparkplug message sequence (0–255, wraps).
    seq: u64,
    /// Highest record number handed to the client.
    sent_up_to: u64,
    /// Publishes handed to the client and not yet written: the record number for DDATA,
    /// none for births.
    unsent: VecDeque<Option<u64>>,
    /// Packet id → record, for DDATA written and not acknowledged.
    by_pkid: BTreeMap<u16, u64>,
    /// Records in flight, by number: acknowledged or not.
    inflight: BTreeMap<u64, bool>,
}

impl Worker {
    pub(super) fn new(
        endpoint: Endpoint,
        spool: Spool,
        birth: Birth,
        rx: Receiver<Item>,
        lost: Arc<AtomicU64>,
        state: Arc<State>,
    ) -> Self {
        // Kept in the spool folder so the NBIRTH after a restart never repeats the last
        // one's.
        let bd_seq_path = spool.dir().join("bdseq");
        let bd_seq =
            std::fs::read_to_string(&bd_seq_path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        Self {
            endpoint,
            spool,
            birth,
            rx,
            lost,
            lost_counted: 0,
            state,
            bd_seq_path,
            bd_seq,
            rebirth: false,
            failures: 0,
        }
    }

    /// Until `stop`: spool, connect, send; then flush the channel and say goodbye.
    pub(super) fn run(mut self, stop: &AtomicBool) {
        let mut backoff = Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) {
            let mut session = self.connect();
            let outcome = self.serve(&mut session, stop);
            self.save_ack(&mut session);
            self.state.online.store(false, Ordering::Relaxed);
            if session.connected {
                backoff = Duration::from_secs(1);
            }
            match outcome {
                Ok(()) => {
                    // Stopping: the last records (up to 2 s), then a clean goodbye, as
                    // the will would have said.
                    self.take_items();
                    if session.connected {
                        self.pump(&mut session, |w, s| {
                            w.save_ack(s);
                            w.spool.backlog() > 0 && w.send_more(s).is_ok()
                        });
                    }
                    let death = records::death_payload(self.bd_seq).encode();
                    let _ = session.client.try_publish(
                        self.endpoint.topic(MessageType::NDeath),
                        QoS::AtLeastOnce,
                        false,
                        death,
                    );
                    let _ = session.client.try_disconnect();
                    self.pump(&mut session, |_, _| true);
                    break;
                }
                Err(why) => {
                    self.failures += 1;
                    if self.failures == 1 || self.failures.is_multiple_of(20) {
                        tracing::warn!(
                            "telemetry: broker {}:{} {why}; {} records queued, retrying",
                            self.endpoint.host,
                            self.endpoint.port,
                            self.spool.backlog()
                        );
                    }
                    let until = Instant::now() + backoff + jitter(backoff);
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        self.wait_for_items(
                            until.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)),
                        );
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.take_items();
    }

    /// Events of a closing session for up to 2 s, while `go_on` says there is more to do.
    fn pump(&mut self, s: &mut Session, mut go_on: impl FnMut(&mut Self, &mut Session) -> bool) {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && go_on(self, s) {
            match s.connection.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(ev)) => self.on_event(s, ev),
                Ok(Err(_)) | Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
            }
        }
        self.save_ack(s);
    }

    /// A new session number per connection, written down before it is used.
    fn connect(&mut self) -> Session {
        self.bd_seq = (self.bd_seq + 1) % 256;
        let bd_seq = self.bd_seq;
        if let Err(e) = std::fs::write(&self.bd_seq_path, format!("{bd_seq}\n")) {
            tracing::warn!(
                "telemetry: cannot keep the session number in {}: {e}",
                self.bd_seq_path.display()
            );
        }
        let (client, connection) = Client::new(self.endpoint.options(bd_seq), 2 * WINDOW);
        Session {
            client,
            connection,
            connected: false,
            seq: 0,
            sent_up_to: self.spool.acked(),
            unsent: VecDeque::new(),
            by_pkid: BTreeMap::new(),
            inflight: BTreeMap::new(),
        }
    }

    /// Run one session until it fails (`Err`, why) or `stop` (`Ok`).
    fn serve(&mut self, s: &mut Session, stop: &AtomicBool) -> Result<(), String> {
        let mut last_ack_saved = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.take_items();
            if s.connected && self.rebirth {
                self.send_births(s)?;
            }
            if s.connected {
                self.send_more(s)?;
            }
            // Connecting (TCP, TLS, CONNACK) must not be cut short, or a far broker is
            // never reached; once connected, wake often to take the line's records.
            let wait = if s.connected { Duration::from_millis(50) } else { Duration::from_secs(6) };
            match s.connection.recv_timeout(wait) {
                Ok(Ok(ev)) => {
                    if let Event::Incoming(Incoming::ConnAck(_)) = ev {
                        self.born(s)?;
                    }
                    self.on_event(s, ev);
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(rumqttc::RecvTimeoutError::Timeout) if !s.connected => {
                    return Err("did not answer".into());
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => return Err("client closed".into()),
            }
            if last_ack_saved.elapsed() > Duration::from_millis(200) {
                self.save_ack(s);
                last_ack_saved = Instant::now();
            }
        }
        self.save_ack(s);
        Ok(())
    }

    fn born(&mut self, s: &mut Session) -> Result<(), String> {
        s.connected = true;
        self.failures = 0;
        // Host applications ask for births here (Sparkplug's rebirth request).
        s.client
            .try_subscribe(self.endpoint.topic(MessageType::NCmd), QoS::AtLeastOnce)
            .map_err(|e| e.to_string())?;
        self.send_births(s)?;
        let bd_seq = self.bd_seq;
        self.state.online.store(true, Ordering::Relaxed);
        tracing::warn!(
            "telemetry: online at {}:{} as {}/{} (session {bd_seq}), {} records queued",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.group,
            self.endpoint.node,
            self.spool.backlog()
        );
        Ok(())
    }

    /// NBIRTH and DBIRTH of this session (`seq` 0 and 1; data goes on from 2).
    fn send_births(&mut self, s: &mut Session) -> Result<(), String> {
        self.rebirth = false;
        let now = unix_ms();
        let node = self.birth.node_payload(self.bd_seq, now);
        let device = self.birth.device_payload(1, now);
        s.seq = 2;
        for (topic, payload) in [(MessageType::NBirth, node), (MessageType::DBirth, device)] {
            s.client
                .try_publish(self.endpoint.topic(topic), QoS::AtMostOnce, false, payload.encode())
                .map_err(|e| e.to_string())?;
            s.unsent.push_back(None);
        }
        Ok(())
    }

    /// Hand the client the next spooled records while the window has room.
    fn send_more(&mut self, s: &mut Session) -> Result<(), String> {
        let room = WINDOW.saturating_sub(s.inflight.len());
        if room == 0 || s.sent_up_to + 1 >= self.spool.next_number() {
            return Ok(());
        }
        let records = self.spool.read_from(s.sent_up_to + 1, room).map_err(|e| e.to_string())?;
        let now = unix_ms();
        for r in records {
            let payload = r.payload(s.seq, now, now.saturating_sub(r.unix_ms) > HISTORICAL_MS);
            s.client
                .try_publish(
                    self.endpoint.topic(MessageType::DData),
                    QoS::AtLeastOnce,
                    false,
                    payload.encode(),
                )
                .map_err(|e| e.to_string())?;
            s.seq = (s.seq + 1) % 256;
            s.sent_up_to = r.number;
            s.unsent.push_back(Some(r.number));
            s.inflight.insert(r.number, false);
        }
        Ok(())
    }

    fn on_event(&mut self, s: &mut Session, ev: Event) {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(Some(number)) = s.unsent.pop_front() {
                    s.by_pkid.insert(pkid, number);
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some(number) = s.by_pkid.remove(&ack.pkid) {
                    s.inflight.insert(number, true);
                }
            }
            Event::Incoming(Incoming::Publish(p)) if p.topic == self.endpoint.topic(MessageType::NCmd) => {
                match kensa_shared::telemetry::Payload::decode(&p.payload) {
                    Ok(cmd) if records::is_rebirth_request(&cmd) => self.rebirth = true,
                    Ok(_) => {}
                    Err(e) => tracing::warn!("telemetry: unreadable NCMD ignored: {e}"),
                }
            }
            _ => {}
        }
    }

    /// Acknowledged records, oldest first, leave the spool.
    fn save_ack(&mut self, s: &mut Session) {
        let mut upto = None;
        while let Some((&n, &true)) = s.inflight.first_key_value() {
            s.inflight.remove(&n);
            upto = Some(n);
        }
        if let Some(n) = upto
            && let Err(e) = self.spool.ack(n)
        {
            tracing::warn!("telemetry: {e}");
        }
        self.state.backlog.store(self.spool.backlog(), Ordering::Relaxed);
    }

    /// Everything the line handed over, into the spool.
    fn take_items(&mut self) {
        self.take(None);
    }

    fn wait_for_items(&mut self, wait: Duration) {
        match self.rx.recv_timeout(wait) {
            Ok(item) => self.take(Some(item)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }

    /// `first` and what else the channel holds: records into the spool, a new birth
    /// certificate kept and sent again.
    fn take(&mut self, first: Option<Item>) {
        let items: Vec<Item> = first.into_iter().chain(self.rx.try_iter()).collect();
        let mut bodies = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Record(body) => bodies.push(body),
                Item::WithThumbnail(part, image) => bodies.push(with_thumbnail(part, image)),
                Item::Birth(birth) => {
                    self.birth = *birth;
                    self.rebirth = true;
                }
            }
        }
        self.spool_bodies(bodies);
    }

    fn spool_bodies(&mut self, bodies: Vec<RecordBody>) {
        let lost = self.lost.load(Ordering::Relaxed);
        if lost > self.lost_counted {
            tracing::warn!(
                "telemetry: {} records lost, the line outran the telemetry thread",
                lost - self.lost_counted
            );
            self.spool.count_dropped(lost - self.lost_counted);
            self.lost_counted = lost;
        }
        if let Err(e) = self.spool.append(bodies, unix_ms()) {
            tracing::error!("telemetry: records dropped: {e}");
        }
        self.state.dropped.store(self.spool.dropped(), Ordering::Relaxed);
        self.state.backlog.store(self.spool.backlog(), Ordering::Relaxed);
    }
}

/// A part's record with its thumbnail encoded as PNG.
fn with_thumbnail(mut part: PartRecord, image: image::RgbImage) -> RecordBody {
    let mut png = Vec::new();
    let encoded = image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
    part.thumbnail_png = encoded.is_ok().then_some(png);
    RecordBody::Part(part)
}

/// Up to a quarter of `backoff`, at random.
fn jitter(backoff: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    backoff.mul_f64(f64::from(nanos % 1000) / 4000.0)
}
