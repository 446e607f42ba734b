//! The contract between the Kensa host tools and the edge box.
//!
//! Everything that crosses from the engineer's PC to a box on the line is defined here
//! and nowhere else: the serial wire format ([`wire`]) and, as they land, the model
//! package and the pixel pipeline both sides must apply identically.
//!
//! How this crate may change: message and manifest layouts are versioned
//! ([`wire::PROTOCOL_VERSION`]); a change to any serialised type bumps the version, and
//! peers refuse a version they do not speak instead of misreading bytes.
#![deny(missing_docs)]

pub mod package;
pub mod preprocess;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod synth;
pub mod tiling;
pub mod verdict;
pub mod wire;

/// Lower-case hex SHA-256 of `bytes`: how packages, backbones and uploads are identified.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
