//! Any bytes, in any chunking, into the frame decoder of both peers: it must never panic,
//! never hold more than one frame's worth of bytes, and every message it accepts must
//! re-encode to a frame that decodes to the same bytes.
#![no_main]

use kensa_shared::wire::frame::{FrameDecoder, MAX_FRAME_LEN, decode, encode};
use kensa_shared::wire::{BoxMessage, Request};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

fn check<T: Serialize + DeserializeOwned>(data: &[u8]) {
    // The first byte picks a chunk size, as a serial port hands out bytes unevenly.
    let chunk = data.first().map_or(1, |&b| b as usize % 64 + 1);
    let mut dec = FrameDecoder::new();
    for part in data.chunks(chunk) {
        for msg in dec.push::<T>(part).into_iter().flatten() {
            let bytes = encode(&msg).expect("an accepted message encodes");
            let again: T = decode(&bytes[..bytes.len() - 1]).expect("and decodes");
            assert_eq!(encode(&again).expect("re-encodes"), bytes);
        }
        assert!(dec.pending() < MAX_FRAME_LEN);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<BoxMessage>(data);
});
