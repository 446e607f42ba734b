//! Framing: how one message becomes bytes on a noisy serial line and back.
//!
//! A frame is `COBS(payload ‖ crc32(payload)) ‖ 0x00`. COBS guarantees the payload never
//! contains a zero byte, so `0x00` always marks a frame boundary: a receiver that joins
//! mid-stream, or sees a corrupted byte, loses at most the frame it is in and resynchronises
//! on the next `0x00`. The CRC-32 (IEEE, little-endian) catches corruption COBS cannot.

use serde::{Serialize, de::DeserializeOwned};

/// Largest payload (postcard bytes, before CRC and COBS) a peer must accept.
///
/// Sized so a 4 KiB flash chunk plus its header fits in one frame; anything longer is
/// discarded by [`FrameDecoder`] without buffering it.
pub const MAX_PAYLOAD_LEN: usize = 4096 + 256;

/// Largest encoded frame on the wire, delimiter included.
pub const MAX_FRAME_LEN: usize = cobs_max(MAX_PAYLOAD_LEN + CRC_LEN) + 1;

const CRC_LEN: usize = 4;

const fn cobs_max(n: usize) -> usize {
    n + n.div_ceil(254)
}

/// Why a frame could not be turned back into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// More than [`MAX_FRAME_LEN`] bytes arrived without a delimiter.
    #[error("frame longer than {MAX_FRAME_LEN} bytes; discarded up to the next delimiter")]
    TooLong,
    /// The bytes between two delimiters are not valid COBS.
    #[error("frame is not valid COBS")]
    Cobs,
    /// The frame is too short to hold a checksum.
    #[error("frame of {0} bytes is too short to hold a checksum")]
    TooShort(usize),
    /// Checksum mismatch: the line corrupted the frame.
    #[error("checksum mismatch (got {got:#010x}, computed {computed:#010x})")]
    Crc {
        /// CRC carried by the frame.
        got: u32,
        /// CRC computed over the received payload.
        computed: u32,
    },
    /// The payload is intact but is not a message this side understands.
    #[error("payload does not decode as a message: {0}")]
    Decode(String),
    /// The message is larger than [`MAX_PAYLOAD_LEN`] and may not be sent.
    #[error("message of {0} bytes exceeds the {MAX_PAYLOAD_LEN}-byte payload limit")]
    Oversize(usize),
}

/// Serialise `msg` into one complete frame, delimiter included.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut payload = postcard::to_stdvec(msg).map_err(|e| FrameError::Decode(e.to_string()))?;
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(FrameError::Oversize(payload.len()));
    }
    let crc = crc32fast::hash(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    let mut out = cobs::encode_vec(&payload);
    out.push(0);
    Ok(out)
}

/// Decode the bytes of one frame (without its delimiter) into a message.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let payload = cobs::decode_vec(frame).map_err(|_| FrameError::Cobs)?;
    if payload.len() < CRC_LEN {
        return Err(FrameError::TooShort(payload.len()));
    }
    let (body, crc) = payload.split_at(payload.len() - CRC_LEN);
    let got = u32::from_le_bytes(crc.try_into().expect("split at CRC_LEN"));
    let computed = crc32fast::hash(body);
    if got != computed {
        return Err(FrameError::Crc { got, computed });
    }
    postcard::from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Incremental receiver: feed it whatever the serial port returned, get messages out.
///
/// Garbage costs one frame: a bad frame is reported as an error and decoding continues at
/// the next delimiter. Memory is bounded by [`MAX_FRAME_LEN`] whatever arrives.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Set after an overlong frame: drop bytes until the next delimiter.
    skipping: bool,
}

impl FrameDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consume `bytes`, returning every frame they complete, in order.
    ///
    /// Each item is either a message or the reason that frame was dropped. Empty frames
    /// (two delimiters in a row, used as line idle) yield nothing.
    pub fn push<T: DeserializeOwned>(&mut self, bytes: &[u8]) -> Vec<Result<T, FrameError>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == 0 {
                if self.skipping {
                    self.skipping = false;
                } else if !self.buf.is_empty() {
                    out.push(decode(&self.buf));
                }
                self.buf.clear();
            } else if !self.skipping {
                if self.buf.len() + 1 >= MAX_FRAME_LEN {
                    self.buf.clear();
                    self.skipping = true;
                    out.push(Err(FrameError::TooLong));
                } else {
                    self.buf.push(b);
                }
            }
        }
        out
    }

    /// Bytes held for a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Probe {
        id: u32,
        value: f32,
        big: u64,
        text: String,
        bytes: Vec<u8>,
    }

    fn probe() -> Probe {
        Probe {
            id: 0x0102_0304,
            value: -1.5e-3,
            big: 0x0A0B_0C0D_0E0F_1011,
            text: "検査 ok".into(),
            bytes: vec![0, 0, 255, 0, 7],
        }
    }

    #[test]
    fn frame_bytes_are_fixed_across_architectures() {
        // postcard varints and little-endian floats/CRC must give identical bytes on x86
        // and aarch64. Expected bytes worked out independently (Python zlib.crc32 and a
        // by-hand COBS): payload 07 | 00 00 80 3f | 03, then CRC-32 LE, then COBS + 0x00.
        let frame = encode(&(7u32, 1.0f32, -2i16)).unwrap();
        let expected = [0x02, 0x07, 0x01, 0x08, 0x80, 0x3f, 0x03, 0x1d, 0xf1, 0x25, 0x8c, 0x00];
        assert_eq!(frame, expected);
    }

    #[test]
    fn round_trip_and_no_zero_inside_frame() {
        let frame = encode(&probe()).unwrap();
        assert_eq!(*frame.last().unwrap(), 0);
        assert!(!frame[..frame.len() - 1].contains(&0));
        assert_eq!(decode::<Probe>(&frame[..frame.len() - 1]).unwrap(), probe());
    }

    #[test]
    fn corrupted_byte_is_caught_and_next_frame_survives() {
        let good = encode(&probe()).unwrap();
        let mut bad = good.clone();
        bad[5] ^= 0x40;
        let mut stream = b"\x13\x37garbage".to_vec();
        stream.push(0);
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&good);
        let mut dec = FrameDecoder::new();
        let got = dec.push::<Probe>(&stream);
        assert_eq!(got.len(), 3);
        assert!(got[0].is_err());
        assert!(got[1].is_err(), "flipped bit must not decode: {:?}", got[1]);
        assert_eq!(got[2].as_ref().unwrap(), &probe());
    }

    #[test]
    fn split_delivery_reassembles() {
        let frame = encode(&probe()).unwrap();
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in frame.chunks(3) {
            got.extend(dec.push::<Probe>(chunk));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap(), &probe());
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn overlong_run_is_dropped_with_bounded_memory() {
        let mut dec = FrameDecoder::new();
        let junk = vec![0x55u8; MAX_FRAME_LEN * 3];
        let got = dec.push::<Probe>(&junk);
        assert_eq!(got, vec![Err(FrameError::TooLong)]);
        assert!(dec.pending() < MAX_FRAME_LEN);
        let got = dec.push::<Probe>(&[&[0u8][..], &encode(&probe()).unwrap()].concat());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap(), &probe());
    }

    #[test]
    fn oversize_message_is_refused_on_send() {
        let p = Probe { bytes: vec![1; MAX_PAYLOAD_LEN + 1], ..probe() };
        assert!(matches!(encode(&p), Err(FrameError::Oversize(_))));
    }
}
