//! The host end of the diagnostics link: requests to a box over a serial line.
//!
//! Each request carries a fresh id; a reply is matched by id, so a late answer to an
//! earlier try is never taken for the current one. A request with no reply in time is
//! sent again (a frame lost to noise costs a retry, not the session). Events that arrive
//! while waiting are kept for [`Link::next_event`].

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kensa_shared::wire::frame::{FrameDecoder, encode};
use kensa_shared::wire::{BoxMessage, Event, PROTOCOL_VERSION, Reply, Request, RequestBody};

/// Wait for one reply before sending the request again.
const REPLY_TIMEOUT: Duration = Duration::from_millis(700);
/// Tries per request.
const TRIES: usize = 4;

/// A healthy box said no (as opposed to a lost link): retrying will not help.
#[derive(Debug, thiserror::Error)]
#[error("the box on {port} refused: {error}")]
pub struct Refused {
    /// The serial device.
    pub port: String,
    /// The box's reason.
    pub error: kensa_shared::wire::DeviceError,
}

/// An open session with a box.
pub struct Link {
    port: Box<dyn serialport::SerialPort>,
    name: String,
    decoder: FrameDecoder,
    next_id: u32,
    events: VecDeque<Event>,
    /// Frames dropped as corrupt since the session opened.
    pub bad_frames: u64,
}

impl Link {
    /// Open `path` at `baud` and say hello; fails with the reason when the box does
    /// not answer or speaks another protocol version.
    pub fn open(path: &Path, baud: u32) -> Result<Self> {
        let name = path.display().to_string();
        let port = serialport::new(name.clone(), baud)
            .timeout(Duration::from_millis(20))
            .open()
            .with_context(|| format!("opening serial port {name}"))?;
        let mut link = Self {
            port,
            name,
            decoder: FrameDecoder::new(),
            next_id: 1,
            events: VecDeque::new(),
            bad_frames: 0,
        };
        match link.call(RequestBody::Hello { protocol: PROTOCOL_VERSION })? {
            Reply::Hello { .. } => Ok(link),
            other => bail!("{}: unexpected answer to hello: {other:?}", link.name),
        }
    }

    /// Send `body` and wait for its reply; a refusal by the box is an error naming it.
    pub fn call(&mut self, body: RequestBody) -> Result<Reply> {
        self.call_within(body, REPLY_TIMEOUT)
    }

    /// [`Self::call`] for requests the box takes long over (loading a flashed model):
    /// each try waits `wait`.
    pub fn call_within(&mut self, body: RequestBody, wait: Duration) -> Result<Reply> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let frame = encode(&Request { id, body: body.clone() })?;
        for _ in 0..TRIES {
            self.port.write_all(&frame).with_context(|| format!("writing to {}", self.name))?;
            self.port.flush().ok();
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                for msg in self.read()? {
                    match msg {
                        BoxMessage::Reply { id: got, body } if got == id => {
                            return body.map_err(|error| Refused { port: self.name.clone(), error }.into());
                        }
                        BoxMessage::Reply { .. } => {} // a late answer to an earlier try
                        BoxMessage::Event(e) => self.events.push_back(e),
                    }
                }
            }
        }
        bail!(
            "no answer from a box on {} to {body:?} ({TRIES} tries); is kensa-fw serving this port?",
            self.name
        )
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
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

    /// Messages completed by whatever the port has now (waits at most its timeout).
    fn read(&mut self) -> Result<Vec<BoxMessage>> {
        let mut buf = [0u8; 4096];
        let n = match self.port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 0,
            Err(e) => return Err(e).with_context(|| format!("reading from {}", self.name)),
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
