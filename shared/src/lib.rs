//! The contract between the Kensa host tools and the edge box.
//!
//! Everything that crosses from the engineer's PC to a box on the line is defined here
//! and nowhere else: the serial wire format ([`wire`]), the model package, the pixel
//! pipeline both sides must apply identically, and the fleet telemetry a box publishes
//! ([`telemetry`]).
//!
//! How this crate may change: message and manifest layouts are versioned
//! ([`wire::PROTOCOL_VERSION`]); a change to any serialised type bumps the version, and
//! peers refuse a version they do not speak instead of misreading bytes.
#![deny(missing_docs)]

pub mod decode;
pub mod drift;
pub mod package;
pub mod preprocess;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod synth;
pub mod telemetry;
pub mod tiling;
pub mod verdict;
pub mod wire;

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Lower-case hex SHA-256 of `bytes`: how packages, backbones and uploads are identified.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`: the one spelling of digests and keys, on both sides.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
