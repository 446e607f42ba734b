//! The host end of the diagnostics link: typed requests to a box over any byte stream
//! (a serial port in the field, an in-memory pipe in tests).
//!
//! Each request carries a fresh id; a reply is matched by id, so a late answer to an
//! earlier try is never taken for the current one. A request with no reply in time is
//! sent again (a frame lost to noise costs a retry, not the session). Events that arrive
//! while waiting are kept for [`Client::next_event`]. Errors come in two layers: the
//! link failed ([`ClientError::Link`]: retrying may help) or the box said no
//! ([`ClientError::Refused`]: it will say so again).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kensa_shared::wire::endpoint::{Endpoint, Hello};
use kensa_shared::wire::frame::{FrameDecoder, encode};
use kensa_shared::wire::{BoxMessage, DeviceError, Event, PROTOCOL_VERSION, Request};

/// Wait for one reply before sending the request again.
const REPLY_TIMEOUT: Duration = Duration::from_millis(700);
/// Tries per request.
const TRIES: usize = 4;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The link failed: the port, no answer in time, or an answer that breaks the
    /// protocol. Reconnecting may help.
    #[error("{port}: {reason}")]
    Link {
        /// The port, as named to the user.
        port: String,
        /// What failed.
        reason: String,
        /// The I/O error, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A healthy box said no: retrying will not help.
    #[error("the box on {port} refused: {error}")]
    Refused {
        /// The port.
        port: String,
        /// The box's reason.
        error: DeviceError,
    },
}

/// An open session with a box over `T`.
pub struct Client<T> {
    port: T,
    name: String,
    decoder: FrameDecoder,
    next_id: u32,
    events: VecDeque<Event>,
    reply_timeout: Duration,
    /// Frames dropped as corrupt since the session opened.
    pub bad_frames: u64,
}

/// A session over a serial port.
pub type Link = Client<Box<dyn serialport::SerialPort>>;

impl Link {
    /// Open `path` at `baud` and say hello.
    pub fn open(path: &Path, baud: u32) -> Result<Self, ClientError> {
        let name = path.display().to_string();
        let port =
            serialport::new(name.clone(), baud).timeout(Duration::from_millis(20)).open().map_err(|e| {
                ClientError::Link {
                    port: name.clone(),
                    reason: format!("opening serial port {name}: {e}"),
                    source: None,
                }
            })?;
        Client::new(port, name)
    }
}

impl<T: Read + Write> Client<T> {
    /// Say hello over `port` (its reads must time out, not block, when no byte comes);
    /// fails when the box does not answer or speaks another protocol version.
    pub fn new(port: T, name: String) -> Result<Self, ClientError> {
        Self::with_timeout(port, name, REPLY_TIMEOUT)
    }

    /// [`Self::new`], waiting `reply_timeout` for each try of each request.
    pub fn with_timeout(port: T, name: String, reply_timeout: Duration) -> Result<Self, ClientError> {
        let mut client = Self {
            port,
            name,
            decoder: FrameDecoder::new(),
            next_id: 1,
            events: VecDeque::new(),
            reply_timeout,
            bad_frames: 0,
        };
        client.call(Hello { protocol: PROTOCOL_VERSION })?;
        Ok(client)
    }

    /// Send `request` and wait for its reply.
    pub fn call<E: Endpoint + std::fmt::Debug>(&mut self, request: E) -> Result<E::Reply, ClientError> {
        self.call_within(request, self.reply_timeout)
    }

    /// [`Self::call`] for requests the box takes long over (loading a flashed model):
    /// each try waits `wait`.
    pub fn call_within<E: Endpoint + std::fmt::Debug>(
        &mut self,
        request: E,
        wait: Duration,
    ) -> Result<E::Reply, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let what = format!("{request:?}");
        let frame = encode(&Request { id, body: request.body() }).map_err(|e| self.broken(e.to_string()))?;
        for _ in 0..TRIES {
            self.port.write_all(&frame).map_err(|e| self.io(format!("writing to {}", self.name), e))?;
            self.port.flush().ok();
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                for msg in self.read()? {
                    match msg {
                        BoxMessage::Reply { id: got, body } if got == id => {
                            let reply = body
                                .map_err(|error| ClientError::Refused { port: self.name.clone(), error })?;
                            return E::reply(reply).map_err(|other| {
                                self.broken(format!("the box answered {what} with {other:?}"))
                            });
                        }
                        BoxMessage::Reply { .. } => {} // a late answer to an earlier try
                        BoxMessage::Event(e) => self.events.push_back(e),
                    }
                }
            }
        }
        Err(self.broken(format!(
            "no answer from a box on {} to {what} ({TRIES} tries); is kensa-fw serving this port?",
            self.name
        )))
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            for msg in self.read()? {
                if let BoxMessage::Event(e) = msg {
                    self.events.push_back(e);
                }
            }
        }
    }

    fn broken(&self, reason: String) -> ClientError {
        ClientError::Link { port: self.name.clone(), reason, source: None }
    }

    fn io(&self, reason: String, e: std::io::Error) -> ClientError {
        ClientError::Link { port: self.name.clone(), reason, source: Some(e) }
    }

    /// Messages completed by whatever the port has now (waits at most its timeout).
    fn read(&mut self) -> Result<Vec<BoxMessage>, ClientError> {
        let mut buf = [0u8; 4096];
        let n = match self.port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => 0,
            Err(e) => return Err(self.io(format!("reading from {}", self.name), e)),
        };
        let mut out = Vec::new();
        for m in self.decoder.push::<BoxMessage>(&buf[..n]) {
            match m {
                Ok(m) => out.push(m),
                Err(e) => {
                    self.bad_frames += 1;
                    tracing::debug!("frame from {} dropped: {e}", self.name);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kensa_shared::verdict::Verdict;
    use kensa_shared::wire::endpoint::{FlashCommit, Status, TestReject};
    use kensa_shared::wire::{Counters, Inspection, Reply, RequestBody, SessionRequest, StationRequest};
    use std::sync::mpsc::{Receiver, Sender, channel};

    /// One end of an in-memory serial line: reads time out after 5 ms without a byte.
    struct Pipe {
        rx: Receiver<Vec<u8>>,
        tx: Sender<Vec<u8>>,
        pending: VecDeque<u8>,
    }

    fn pipe() -> (Pipe, Pipe) {
        let (a_tx, a_rx) = channel();
        let (b_tx, b_rx) = channel();
        (
            Pipe { rx: a_rx, tx: b_tx, pending: VecDeque::new() },
            Pipe { rx: b_rx, tx: a_tx, pending: VecDeque::new() },
        )
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.pending.is_empty() {
                match self.rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(bytes) => self.pending.extend(bytes),
                    Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            let n = buf.len().min(self.pending.len());
            for (b, p) in buf.iter_mut().zip(self.pending.drain(..n)) {
                *b = p;
            }
            Ok(n)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.tx.send(buf.to_vec()).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A box on the other end that answers each request with `answer` (`None`: silence).
    fn fake_box(
        mut end: Pipe,
        answer: impl Fn(&RequestBody) -> Option<Result<Reply, DeviceError>> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut decoder = FrameDecoder::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = match end.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                    Err(_) => return,
                };
                for req in decoder.push::<Request>(&buf[..n]).into_iter().flatten() {
                    let event = Event::Inspection(Inspection {
                        part: 7,
                        captured_us: 0,
                        score: 1.0,
                        verdict: Verdict::Ok,
                        latency_us: 1,
                        action: kensa_shared::wire::PartAction::Pass,
                        reason: String::new(),
                    });
                    // An event and a stale reply first: the client must keep the one and skip the other.
                    let noise =
                        [BoxMessage::Event(event), BoxMessage::Reply { id: 999, body: Ok(Reply::Done) }];
                    for m in noise {
                        if end.write_all(&encode(&m).unwrap()).is_err() {
                            return;
                        }
                    }
                    if let Some(body) = answer(&req.body)
                        && end.write_all(&encode(&BoxMessage::Reply { id: req.id, body }).unwrap()).is_err()
                    {
                        return;
                    }
                }
            }
        })
    }

    fn station(body: &RequestBody) -> Option<Result<Reply, DeviceError>> {
        Some(match body {
            RequestBody::Session(SessionRequest::Hello { protocol }) => {
                Ok(Reply::Hello { protocol: *protocol })
            }
            RequestBody::Station(StationRequest::Status) => {
                let counters = Counters { ng: 2, ..Default::default() };
                Ok(Reply::Status(kensa_shared::wire::Status { counters, ..Default::default() }))
            }
            RequestBody::Station(StationRequest::TestReject) => Ok(Reply::Done),
            // A box that breaks the protocol: a commit answered like a chunk.
            RequestBody::Flash(_) => Ok(Reply::FlashOffset(0)),
            _ => Err(DeviceError::Failed("no store configured".into())),
        })
    }

    #[test]
    fn typed_calls_get_their_reply_and_keep_the_events_that_arrive_meanwhile() {
        let (host, boxed) = pipe();
        let _box = fake_box(boxed, station);
        let mut c = Client::with_timeout(host, "pipe".into(), Duration::from_millis(200)).unwrap();
        let status: kensa_shared::wire::Status = c.call(Status).unwrap();
        assert_eq!(status.counters.ng, 2);
        c.call(TestReject).unwrap();
        let Some(Event::Inspection(i)) = c.next_event(Duration::from_millis(100)).unwrap() else {
            panic!("the events that came with the replies were lost")
        };
        assert_eq!(i.part, 7);
    }

    #[test]
    fn a_refusal_and_a_broken_link_are_told_apart() {
        let (host, boxed) = pipe();
        let _box = fake_box(boxed, station);
        let mut c = Client::with_timeout(host, "pipe".into(), Duration::from_millis(200)).unwrap();
        match c.call(kensa_shared::wire::endpoint::Logs) {
            Err(ClientError::Refused { error: DeviceError::Failed(m), .. }) => {
                assert!(m.contains("no store"))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match c.call(FlashCommit) {
            Err(ClientError::Link { reason, .. }) => {
                assert!(reason.contains("FlashCommit") && reason.contains("FlashOffset"), "{reason}")
            }
            other => panic!("expected a protocol break, got {other:?}"),
        }
    }

    #[test]
    fn a_box_that_never_answers_is_a_link_failure_naming_the_port() {
        let (host, boxed) = pipe();
        let _box = fake_box(boxed, |_| None);
        let err = Client::with_timeout(host, "/dev/ttyUSB9".into(), Duration::from_millis(30)).err().unwrap();
        let ClientError::Link { reason, .. } = &err else { panic!("{err:?}") };
        assert!(reason.contains("no answer") && reason.contains("/dev/ttyUSB9"), "{reason}");
    }
}
