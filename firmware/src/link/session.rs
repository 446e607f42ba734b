//! One session on an open port: hello and protocol version, the results stream, and
//! routing each request to its owner (flasher here, station through the channel).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use kensa_shared::wire::frame::{FrameDecoder, encode};
use kensa_shared::wire::{
    BoxMessage, DeviceError, PROTOCOL_VERSION, Reply, Request, RequestBody, SessionRequest,
};

use super::flasher::no_store;
use super::{Next, PortEnd};

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
                    let Request { id, body } = req;
                    let restart = matches!(body, RequestBody::Session(SessionRequest::Restart));
                    let reply = match body {
                        RequestBody::Session(SessionRequest::Hello { protocol })
                            if protocol == PROTOCOL_VERSION =>
                        {
                            open = true;
                            Some(Ok(Reply::Hello { protocol }))
                        }
                        RequestBody::Session(SessionRequest::Hello { protocol }) => {
                            Some(Err(DeviceError::ProtocolMismatch {
                                box_version: PROTOCOL_VERSION,
                                host_version: protocol,
                            }))
                        }
                        _ if !open => Some(Err(DeviceError::NoSession)),
                        RequestBody::Session(SessionRequest::Watch(on)) => {
                            end.watching.store(on, Ordering::Relaxed);
                            Some(Ok(Reply::Done))
                        }
                        RequestBody::Session(SessionRequest::Restart) => Some(Ok(Reply::Restarting)),
                        RequestBody::Flash(ref f) => Some(match &mut end.flash {
                            Some(flasher) => flasher.handle(f),
                            None => Err(no_store()),
                        }),
                        // Settings are saved here, on the port thread, then applied by the station.
                        RequestBody::Station(s) => match end.flash.as_mut().map(|f| f.save_setting(&s)) {
                            Some(Err(e)) => Some(Err(e)),
                            _ => {
                                let _ = end.requests.send((id, s));
                                None
                            }
                        },
                    };
                    if let Some(reply) = reply {
                        let restarting = reply == Ok(Reply::Restarting);
                        write_frame(port, &BoxMessage::Reply { id, body: reply })?;
                        if restarting {
                            let next =
                                if restart { Next::RestartPipeline } else { Next::StartFlashedFirmware };
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

fn write_frame<T: Write>(port: &mut T, msg: &BoxMessage) -> std::io::Result<()> {
    let bytes = encode(msg).map_err(std::io::Error::other)?;
    port.write_all(&bytes)?;
    port.flush()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;
    use crate::link::{Identity, InForce, channel};
    use kensa_shared::wire::StationRequest;

    fn identity() -> Identity {
        Identity {
            model: Arc::new(Mutex::new(InForce { name: "patchcore 256x256".into(), ..Default::default() })),
            source: "synthetic".into(),
            started: Instant::now(),
            logbook: crate::logbook::Logbook::default(),
            firmware_sha256: "00".repeat(32),
            supervised: None,
            trusted_keys: 0,
        }
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
        let mut input = req(1, StationRequest::Status.into());
        input.extend(b"\x07garbage\x00\x00");
        input.extend(req(2, SessionRequest::Hello { protocol: PROTOCOL_VERSION + 1 }.into()));
        input.extend(req(3, SessionRequest::Hello { protocol: PROTOCOL_VERSION }.into()));
        let mut corrupt = req(4, StationRequest::Info.into());
        corrupt[3] ^= 0x10;
        input.extend(corrupt);
        input.extend(req(5, SessionRequest::Watch(true).into()));
        input.extend(req(6, StationRequest::Status.into()));
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
        let forwarded: Vec<u32> = control.requests.try_iter().map(|(id, _)| id).collect();
        assert_eq!(forwarded, [6]);
    }
}
