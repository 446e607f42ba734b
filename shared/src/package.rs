//! The model package: the one file `kensa export` writes and the box runs.
//!
//! Layout (little-endian):
//!
//! ```text
//! "KENSAPKG" | u16 format | u32 manifest length | manifest (postcard) | ONNX graph
//! ```
//!
//! The manifest carries everything the box needs besides the graph (input size, colour,
//! tiling, threshold and why, score semantics) and the sha256 of the ONNX bytes, so a
//! truncated or altered package is refused before it can judge a single part.
//!
//! The graph's contract: input `pixels` u8 `[1, 3, H, W]` (the output of
//! [`Preprocess::apply`](crate::preprocess::Preprocess::apply), RGB planes); outputs
//! `anomaly_map` f32 `[1, 1, H, W]` and `score` f32 `[1]`. NG when `score ≥ threshold`.

use serde::{Deserialize, Serialize};

use crate::preprocess::Preprocess;
use crate::tiling::Tiling;

/// Version of the package layout and manifest.
pub const PACKAGE_FORMAT: u16 = 1;
const MAGIC: &[u8; 8] = b"KENSAPKG";
/// Name of the graph input.
pub const INPUT: &str = "pixels";
/// Name of the per-pixel anomaly map output.
pub const MAP_OUTPUT: &str = "anomaly_map";
/// Name of the image score output.
pub const SCORE_OUTPUT: &str = "score";

/// Number format of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// f32 weights and compute.
    Fp32,
}

/// What the package is and how to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Head: `patchcore` or `padim`.
    pub kind: String,
    /// Pixel pipeline before the graph (resize, colour).
    pub preprocess: Preprocess,
    /// Tiling of large frames (each tile is one graph run; the box stitches maps).
    pub tiling: Option<Tiling>,
    /// Decision threshold on `score`.
    pub threshold: f32,
    /// How the threshold was chosen, in words.
    pub threshold_rule: String,
    /// How `score` is formed from the map, in words.
    pub score: String,
    /// Number format.
    pub precision: Precision,
    /// What it was trained on, in words.
    pub training: String,
    /// Metrics measured at export, `name → value`.
    pub metrics: Vec<(String, f64)>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// sha256 of the ONNX bytes (lower-case hex).
    pub onnx_sha256: String,
}

/// A package in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    /// The manifest.
    pub manifest: Manifest,
    /// The ONNX graph.
    pub onnx: Vec<u8>,
}

/// Why a package was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// Not a package at all.
    #[error("not a Kensa model package (bad magic)")]
    NotAPackage,
    /// Written by a newer or older layout.
    #[error("package format {found} is not supported (this build reads {PACKAGE_FORMAT})")]
    Version {
        /// Format in the file.
        found: u16,
    },
    /// Shorter than its header says.
    #[error("package is truncated: {0}")]
    Truncated(&'static str),
    /// The manifest does not decode.
    #[error("package manifest is corrupt: {0}")]
    Manifest(String),
    /// The graph is not the one the manifest names.
    #[error("package graph does not match its manifest (sha256 {found}, manifest says {expected})")]
    Checksum {
        /// Hash of the bytes present.
        found: String,
        /// Hash in the manifest.
        expected: String,
    },
}

impl Package {
    /// Assemble a package, filling in the ONNX checksum.
    pub fn new(mut manifest: Manifest, onnx: Vec<u8>) -> Self {
        manifest.onnx_sha256 = crate::sha256_hex(&onnx);
        Self { manifest, onnx }
    }

    /// Serialise.
    pub fn to_bytes(&self) -> Vec<u8> {
        let manifest = postcard::to_stdvec(&self.manifest).expect("manifest serialises");
        let mut out = Vec::with_capacity(14 + manifest.len() + self.onnx.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PACKAGE_FORMAT.to_le_bytes());
        out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.extend_from_slice(&self.onnx);
        out
    }

    /// Parse and verify bytes written by [`Package::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PackageError> {
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(PackageError::NotAPackage);
        }
        let header = bytes.get(8..14).ok_or(PackageError::Truncated("header"))?;
        let found = u16::from_le_bytes([header[0], header[1]]);
        if found != PACKAGE_FORMAT {
            return Err(PackageError::Version { found });
        }
        let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
        let manifest = bytes.get(14..14 + len).ok_or(PackageError::Truncated("manifest"))?;
        let manifest: Manifest =
            postcard::from_bytes(manifest).map_err(|e| PackageError::Manifest(e.to_string()))?;
        let onnx = bytes[14 + len..].to_vec();
        let found = crate::sha256_hex(&onnx);
        if found != manifest.onnx_sha256 {
            return Err(PackageError::Checksum { found, expected: manifest.onnx_sha256 });
        }
        Ok(Self { manifest, onnx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{Colour, Resize};

    fn sample() -> Package {
        Package::new(
            Manifest {
                kind: "patchcore".into(),
                preprocess: Preprocess {
                    width: 64,
                    height: 64,
                    resize: Resize::Stretch,
                    colour: Colour::Gray,
                },
                tiling: None,
                threshold: 1.5,
                threshold_rule: "false-reject rate 1%".into(),
                score: "mean of the top 3 % of the map".into(),
                precision: Precision::Fp32,
                training: "test".into(),
                metrics: vec![("image_auroc".into(), 0.97)],
                created_unix: 1,
                onnx_sha256: String::new(),
            },
            b"onnx graph bytes".to_vec(),
        )
    }

    #[test]
    fn round_trips() {
        let p = sample();
        assert_eq!(Package::from_bytes(&p.to_bytes()).unwrap(), p);
    }

    #[test]
    fn damaged_packages_are_refused_with_the_reason() {
        let good = sample().to_bytes();
        assert_eq!(Package::from_bytes(b"PK\x03\x04zip"), Err(PackageError::NotAPackage));
        let mut v = good.clone();
        v[8] = 9;
        assert_eq!(Package::from_bytes(&v), Err(PackageError::Version { found: 9 }));
        assert_eq!(Package::from_bytes(&good[..20]), Err(PackageError::Truncated("manifest")));
        // Cut inside the graph: the checksum catches it.
        assert!(matches!(Package::from_bytes(&good[..good.len() - 3]), Err(PackageError::Checksum { .. })));
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let err = Package::from_bytes(&tampered).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
