//! The model package: the one file `kensa export` writes and the box runs.
//!
//! Layout (little-endian):
//!
//! ```text
//! "KENSAPKG" | u16 format | u32 manifest length | manifest (postcard)
//!            | u64 graph length | ONNX graph | sha256 of every byte before it (32)
//!            | [signature]
//! signature: 0x01 | ed25519 public key (32) | ed25519 signature (64) over every byte before it
//! ```
//!
//! The manifest carries everything the box needs besides the graph (input size, colour,
//! tiling, threshold and why, score semantics, the scores the export measured, golden
//! input/score pairs). The checksum covers the manifest and the graph, so a truncated or
//! altered package, its threshold included, is refused before it can judge a single
//! part, signed or not. A signed package also says who made it; a box configured with
//! trusted keys refuses any other. The box replays the golden pairs before it trusts a
//! package to run ([`Golden`]).
//!
//! The graph's contract: input `pixels` u8 `[1, 3, H, W]` (the output of
//! [`Preprocess::apply`](crate::preprocess::Preprocess::apply), RGB planes); outputs
//! `anomaly_map` f32 `[1, 1, H, W]` and `score` f32 `[1]`. NG when `score ≥ threshold`.

pub use ed25519_dalek::VerifyingKey;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};

use crate::preprocess::Preprocess;
use crate::tiling::Tiling;

/// Version of the package layout and manifest.
pub const PACKAGE_FORMAT: u16 = 3;
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
    /// Weights stored as int8 (per output channel, `DequantizeLinear`), f32 compute:
    /// about a quarter of the size, for flashing over a slow line.
    Int8Weights,
    /// Static post-training quantisation: the backbone's 1×1 convolutions run as
    /// `ConvInteger` on u8 activations calibrated on training images (weights symmetric
    /// 8-bit per output channel, stored as u8 around 128) and the PatchCore bank product
    /// as `MatMulInteger`; the rest stays f32.
    Int8,
}

/// The scoring head a package carries. Written as its name (`patchcore`, …), so the
/// manifest's bytes are what they always were; an unknown name is refused at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum HeadKind {
    /// PatchCore: distance to a coreset of good patches.
    PatchCore,
    /// PaDiM: Mahalanobis distance to a Gaussian per position.
    Padim,
    /// A linear OK/NG classifier per patch, learnt from labelled defects.
    Supervised,
    /// PatchCore and the classifier, added.
    CombinedPatchCore,
    /// PaDiM and the classifier, added.
    CombinedPadim,
}

impl HeadKind {
    /// Every kind.
    pub const ALL: [HeadKind; 5] =
        [Self::PatchCore, Self::Padim, Self::Supervised, Self::CombinedPatchCore, Self::CombinedPadim];

    /// Its name in manifests, reports and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::PatchCore => "patchcore",
            Self::Padim => "padim",
            Self::Supervised => "supervised",
            Self::CombinedPatchCore => "combined-patchcore",
            Self::CombinedPadim => "combined-padim",
        }
    }
}

impl std::fmt::Display for HeadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl From<HeadKind> for String {
    fn from(k: HeadKind) -> Self {
        k.name().to_string()
    }
}

impl TryFrom<String> for HeadKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| format!("unknown head kind {name:?}"))
    }
}

/// What the package is and how to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The scoring head.
    pub kind: HeadKind,
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
    /// Lowest and highest score of the export's test images, when it had some: a
    /// threshold far outside them is not one the export chose.
    pub scores_measured: Option<[f32; 2]>,
    /// Inputs with the score the export's runtime gave them: the box must reproduce
    /// them ([`GOLDEN_TOLERANCE`]) before it runs the package.
    pub golden: Vec<Golden>,
}

/// A reference input and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    /// The image (PNG).
    pub png: Vec<u8>,
    /// Its score at export.
    pub score: f32,
}

/// How far a replayed golden score may be from the recorded one, relative to
/// `max(|recorded|, 1)`: enough for another CPU's float order and integer kernels, far
/// too little for another graph or pipeline.
pub const GOLDEN_TOLERANCE: f32 = 0.01;

impl Golden {
    /// Whether `score`, replayed, matches this pair.
    pub fn matches(&self, score: f32) -> bool {
        (score - self.score).abs() <= GOLDEN_TOLERANCE * self.score.abs().max(1.0)
    }
}

/// A package in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    /// The manifest.
    pub manifest: Manifest,
    /// The ONNX graph.
    pub onnx: Vec<u8>,
    /// Who signed it; `from_bytes` has checked the signature.
    pub signature: Option<Signature>,
}

/// An ed25519 signature over a package's bytes and the key that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// The signer's public key.
    pub public_key: [u8; 32],
    /// The signature.
    pub signature: [u8; 64],
}

impl Signature {
    /// Length of [`Signature::to_vec`]: public key, then signature.
    pub const LEN: usize = 32 + 64;

    /// A detached signature over `bytes` (a firmware binary, which has no room for one).
    pub fn detached(key: &SigningKey, bytes: &[u8]) -> Self {
        Self { public_key: key.verifying_key().to_bytes(), signature: key.sign(bytes).to_bytes() }
    }

    /// Public key then signature, as `.sig` files and the wire carry it.
    pub fn to_vec(&self) -> Vec<u8> {
        [self.public_key.as_slice(), self.signature.as_slice()].concat()
    }

    /// Read [`Signature::to_vec`]'s layout.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PackageError> {
        if bytes.len() != Self::LEN {
            return Err(PackageError::Truncated("signature"));
        }
        Ok(Self {
            public_key: bytes[..32].try_into().expect("32 bytes"),
            signature: bytes[32..].try_into().expect("64 bytes"),
        })
    }

    /// Check a detached signature over `bytes`, and, when `trusted` is not empty, that
    /// one of those keys made it.
    pub fn verify_detached(
        signature: Option<&Self>,
        bytes: &[u8],
        trusted: &[VerifyingKey],
    ) -> Result<(), PackageError> {
        let Some(s) = signature else {
            return if trusted.is_empty() { Ok(()) } else { Err(PackageError::Unsigned) };
        };
        let key = VerifyingKey::from_bytes(&s.public_key).map_err(|_| PackageError::BadSignature)?;
        key.verify(bytes, &ed25519_dalek::Signature::from_bytes(&s.signature))
            .map_err(|_| PackageError::BadSignature)?;
        if trusted.is_empty() || trusted.iter().any(|k| k.to_bytes() == s.public_key) {
            Ok(())
        } else {
            Err(PackageError::UntrustedSigner(key_hex(&s.public_key)))
        }
    }
}

const SIGNATURE_TAG: u8 = 1;
const DIGEST_LEN: usize = 32;
const SIGNATURE_LEN: usize = 1 + 32 + 64;
const HEADER_LEN: usize = 14;

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
    /// Bytes follow the graph that are not a signature.
    #[error("package has {0} unexpected bytes after the graph")]
    Trailing(usize),
    /// The decision threshold is not a finite number: every part would come out the
    /// same, whatever it shows.
    #[error("package threshold {0} is not a finite number")]
    Threshold(String),
    /// The signature does not verify: the package was altered after signing.
    #[error("package signature does not verify (altered after signing, or a bad signature)")]
    BadSignature,
    /// Signing is required and the package is not signed.
    #[error("package is not signed, and this box accepts only signed packages")]
    Unsigned,
    /// Signed, but not by a trusted key.
    #[error("package is signed by {0}, which is not a trusted key")]
    UntrustedSigner(String),
    /// The bytes are not the ones the export wrote (the checksum covers the manifest).
    #[error("package is damaged: its checksum does not match (sha256 {found}, recorded {expected})")]
    Damaged {
        /// Hash of the bytes present.
        found: String,
        /// Hash recorded in the package.
        expected: String,
    },
    /// The package carries no golden pairs to check it with.
    #[error("package carries no golden input/score pairs to check it with")]
    NoGolden,
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
    /// Assemble an unsigned package, filling in the ONNX checksum.
    pub fn new(mut manifest: Manifest, onnx: Vec<u8>) -> Self {
        manifest.onnx_sha256 = crate::sha256_hex(&onnx);
        Self { manifest, onnx, signature: None }
    }

    /// Header, manifest, graph and their checksum: the bytes a signature covers.
    fn body(&self) -> Vec<u8> {
        let mut out = self.content();
        let digest = crate::sha256(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Header, manifest and graph: the bytes the checksum covers.
    fn content(&self) -> Vec<u8> {
        let manifest = postcard::to_stdvec(&self.manifest).expect("manifest serialises");
        let mut out = Vec::with_capacity(HEADER_LEN + manifest.len() + 8 + self.onnx.len() + SIGNATURE_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PACKAGE_FORMAT.to_le_bytes());
        out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.extend_from_slice(&(self.onnx.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.onnx);
        out
    }

    /// Sign the package as it is now (a later change to it voids the signature).
    pub fn sign(&mut self, key: &SigningKey) {
        let signature = key.sign(&self.body()).to_bytes();
        self.signature = Some(Signature { public_key: key.verifying_key().to_bytes(), signature });
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        if let Some(s) = &self.signature {
            out.push(SIGNATURE_TAG);
            out.extend_from_slice(&s.public_key);
            out.extend_from_slice(&s.signature);
        }
        out
    }

    /// Parse and verify bytes written by [`Package::to_bytes`]: layout, checksum and,
    /// when present, the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PackageError> {
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(PackageError::NotAPackage);
        }
        let header = bytes.get(8..HEADER_LEN).ok_or(PackageError::Truncated("header"))?;
        let found = u16::from_le_bytes([header[0], header[1]]);
        if found != PACKAGE_FORMAT {
            return Err(PackageError::Version { found });
        }
        let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
        let manifest_end = HEADER_LEN.checked_add(len).ok_or(PackageError::Truncated("manifest"))?;
        let manifest = bytes.get(HEADER_LEN..manifest_end).ok_or(PackageError::Truncated("manifest"))?;
        let manifest: Manifest =
            postcard::from_bytes(manifest).map_err(|e| PackageError::Manifest(e.to_string()))?;
        if !manifest.threshold.is_finite() {
            return Err(PackageError::Threshold(manifest.threshold.to_string()));
        }
        let graph_len =
            bytes.get(manifest_end..manifest_end + 8).ok_or(PackageError::Truncated("graph length"))?;
        let graph_len = u64::from_le_bytes(graph_len.try_into().expect("8 bytes"));
        let graph_start = manifest_end + 8;
        let graph_end = usize::try_from(graph_len)
            .ok()
            .and_then(|l| graph_start.checked_add(l))
            .filter(|&end| end <= bytes.len())
            .ok_or(PackageError::Truncated("graph"))?;
        let digest_end = graph_end
            .checked_add(DIGEST_LEN)
            .filter(|&e| e <= bytes.len())
            .ok_or(PackageError::Truncated("checksum"))?;
        let found = crate::sha256_hex(&bytes[..graph_end]);
        let expected = crate::hex(&bytes[graph_end..digest_end]);
        if found != expected {
            return Err(PackageError::Damaged { found, expected });
        }
        let onnx = bytes[graph_start..graph_end].to_vec();
        let found = crate::sha256_hex(&onnx);
        if found != manifest.onnx_sha256 {
            return Err(PackageError::Checksum { found, expected: manifest.onnx_sha256 });
        }
        check_threshold(&manifest)?;
        if manifest.golden.is_empty() {
            return Err(PackageError::NoGolden);
        }
        let graph_end = digest_end;
        let signature = match &bytes[graph_end..] {
            [] => None,
            [SIGNATURE_TAG, rest @ ..] if rest.len() == SIGNATURE_LEN - 1 => {
                let public_key: [u8; 32] = rest[..32].try_into().expect("32 bytes");
                let signature: [u8; 64] = rest[32..].try_into().expect("64 bytes");
                let key = VerifyingKey::from_bytes(&public_key).map_err(|_| PackageError::BadSignature)?;
                key.verify(&bytes[..graph_end], &ed25519_dalek::Signature::from_bytes(&signature))
                    .map_err(|_| PackageError::BadSignature)?;
                Some(Signature { public_key, signature })
            }
            [SIGNATURE_TAG, ..] => return Err(PackageError::Truncated("signature")),
            rest => return Err(PackageError::Trailing(rest.len())),
        };
        Ok(Self { manifest, onnx, signature })
    }

    /// Read a format-2 package (before the whole-package checksum and golden pairs),
    /// for `kensa upgrade` to seal it anew; its signature, which covers the old layout,
    /// is dropped. Boxes do not run format 2.
    pub fn from_format2_bytes(bytes: &[u8]) -> Result<Self, PackageError> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(PackageError::NotAPackage);
        }
        let found = u16::from_le_bytes([bytes[8], bytes[9]]);
        if found != 2 {
            return Err(PackageError::Version { found });
        }
        let len = u32::from_le_bytes(bytes[10..14].try_into().expect("4 bytes")) as usize;
        let manifest_end = HEADER_LEN.checked_add(len).ok_or(PackageError::Truncated("manifest"))?;
        // Format 3 appended two fields to the manifest: `None` and an empty list.
        let mut manifest =
            bytes.get(HEADER_LEN..manifest_end).ok_or(PackageError::Truncated("manifest"))?.to_vec();
        manifest.extend_from_slice(&[0, 0]);
        let manifest: Manifest =
            postcard::from_bytes(&manifest).map_err(|e| PackageError::Manifest(e.to_string()))?;
        let graph_len =
            bytes.get(manifest_end..manifest_end + 8).ok_or(PackageError::Truncated("graph length"))?;
        let graph_start = manifest_end + 8;
        let graph_end = usize::try_from(u64::from_le_bytes(graph_len.try_into().expect("8 bytes")))
            .ok()
            .and_then(|l| graph_start.checked_add(l))
            .filter(|&end| end <= bytes.len())
            .ok_or(PackageError::Truncated("graph"))?;
        let onnx = bytes[graph_start..graph_end].to_vec();
        let found = crate::sha256_hex(&onnx);
        if found != manifest.onnx_sha256 {
            return Err(PackageError::Checksum { found, expected: manifest.onnx_sha256 });
        }
        Ok(Self { manifest, onnx, signature: None })
    }

    /// Accept only packages signed by one of `trusted` (when the list is not empty).
    pub fn check_trust(&self, trusted: &[VerifyingKey]) -> Result<(), PackageError> {
        if trusted.is_empty() {
            return Ok(());
        }
        let sig = self.signature.ok_or(PackageError::Unsigned)?;
        if trusted.iter().any(|k| k.to_bytes() == sig.public_key) {
            Ok(())
        } else {
            Err(PackageError::UntrustedSigner(key_hex(&sig.public_key)))
        }
    }
}

/// A threshold far outside the scores the export measured was not chosen by it: refused.
/// Allowed: the measured range widened by its own span on both sides.
fn check_threshold(m: &Manifest) -> Result<(), PackageError> {
    let Some([lo, hi]) = m.scores_measured else { return Ok(()) };
    let span = (hi - lo).abs().max(hi.abs() * 0.1).max(1e-6);
    if m.threshold < lo - span || m.threshold > hi + span {
        return Err(PackageError::Threshold(format!(
            "{} (outside the scores the export measured, {lo} to {hi})",
            m.threshold
        )));
    }
    Ok(())
}

/// Lower-case hex of a key, as key files and configs write it.
pub fn key_hex(key: &[u8]) -> String {
    crate::hex(key)
}

/// Parse 32 bytes of hex (surrounding whitespace allowed), as written by `kensa keygen`.
pub fn parse_key_hex(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.len() != 64 || !t.is_ascii() {
        return Err(format!("expected 64 hex digits, found {} characters", t.len()));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("not hex: {:?}", &t[2 * i..2 * i + 2]))?;
    }
    Ok(out)
}

/// A trusted public key from its hex form.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_bytes(&parse_key_hex(text)?).map_err(|e| format!("not an ed25519 public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_whose_threshold_is_not_a_number_is_refused() {
        for t in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut pkg = sample();
            pkg.manifest.threshold = t;
            match Package::from_bytes(&pkg.to_bytes()) {
                Err(PackageError::Threshold(found)) => assert_eq!(found, t.to_string()),
                other => panic!("threshold {t}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_threshold_the_export_did_not_measure_near_is_refused_even_with_a_valid_checksum() {
        let mut pkg = sample();
        pkg.manifest.threshold = 1e9;
        let err = Package::from_bytes(&pkg.to_bytes()).unwrap_err();
        assert!(matches!(&err, PackageError::Threshold(m) if m.contains("outside the scores")), "{err}");
        pkg.manifest.threshold = 4.0; // above every measured score, within reach
        assert!(Package::from_bytes(&pkg.to_bytes()).is_ok());
        pkg.manifest.golden.clear();
        assert_eq!(Package::from_bytes(&pkg.to_bytes()), Err(PackageError::NoGolden));
    }

    #[test]
    fn golden_scores_match_within_the_tolerance_only() {
        let g = Golden { png: Vec::new(), score: 20.0 };
        assert!(g.matches(20.1) && g.matches(19.85));
        assert!(!g.matches(20.5) && !g.matches(f32::NAN));
        let small = Golden { png: Vec::new(), score: 0.001 };
        assert!(small.matches(0.009) && !small.matches(0.02));
    }

    #[test]
    fn a_head_kind_is_written_as_its_name_and_an_unknown_one_is_refused() {
        for k in HeadKind::ALL {
            let as_enum = postcard::to_stdvec(&k).unwrap();
            assert_eq!(as_enum, postcard::to_stdvec(k.name()).unwrap(), "{k}: same bytes as the name");
            assert_eq!(postcard::from_bytes::<HeadKind>(&as_enum).unwrap(), k);
        }
        let unknown = postcard::to_stdvec("isolation-forest").unwrap();
        assert!(postcard::from_bytes::<HeadKind>(&unknown).is_err());
    }
    use crate::preprocess::{Colour, Resize};

    fn sample() -> Package {
        Package::new(
            Manifest {
                kind: HeadKind::PatchCore,
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
                scores_measured: Some([0.5, 3.0]),
                golden: vec![Golden { png: vec![1, 2, 3], score: 0.9 }],
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
        // Cut inside the checksum, then inside the graph.
        assert_eq!(Package::from_bytes(&good[..good.len() - 3]), Err(PackageError::Truncated("checksum")));
        assert_eq!(Package::from_bytes(&good[..good.len() - 35]), Err(PackageError::Truncated("graph")));
        // Any byte altered, in the graph, the checksum or the manifest's threshold.
        let threshold_at = HEADER_LEN + 1 + 3; // kind name "patchcore" is 1 + 9 bytes...
        for at in [good.len() - 1, good.len() - 40, threshold_at, 20] {
            let mut tampered = good.clone();
            tampered[at] ^= 1;
            let err = Package::from_bytes(&tampered).unwrap_err();
            assert!(
                matches!(err, PackageError::Damaged { .. } | PackageError::Manifest(_)),
                "byte {at}: {err}"
            );
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"zz");
        assert_eq!(Package::from_bytes(&trailing), Err(PackageError::Trailing(2)));
        // A length field claiming more than the file holds.
        let mut huge = good;
        let at = HEADER_LEN + postcard::to_stdvec(&sample().manifest).unwrap().len();
        huge[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Package::from_bytes(&huge), Err(PackageError::Truncated("graph")));
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signatures_verify_and_catch_tampering() {
        let mut p = sample();
        p.sign(&key(7));
        let bytes = p.to_bytes();
        let back = Package::from_bytes(&bytes).unwrap();
        assert_eq!(back.signature.unwrap().public_key, key(7).verifying_key().to_bytes());
        // Any changed byte before the signature: checksum or signature catches it.
        for at in [20, bytes.len() - SIGNATURE_LEN - 1] {
            let mut t = bytes.clone();
            t[at] ^= 0x10;
            assert!(Package::from_bytes(&t).is_err(), "byte {at} altered and accepted");
        }
        // A manifest re-written after signing (threshold moved) with a valid checksum.
        let mut moved = back.clone();
        moved.manifest.threshold = 2.5;
        assert_eq!(Package::from_bytes(&moved.to_bytes()), Err(PackageError::BadSignature));
        assert_eq!(Package::from_bytes(&bytes[..bytes.len() - 5]), Err(PackageError::Truncated("signature")));
    }

    #[test]
    fn trust_lists_accept_known_signers_only() {
        let trusted = [key(1).verifying_key()];
        let unsigned = sample();
        assert_eq!(unsigned.check_trust(&[]), Ok(()));
        assert_eq!(unsigned.check_trust(&trusted), Err(PackageError::Unsigned));
        let mut p = sample();
        p.sign(&key(1));
        assert_eq!(p.check_trust(&trusted), Ok(()));
        p.sign(&key(2));
        let err = p.check_trust(&trusted).unwrap_err();
        assert_eq!(err, PackageError::UntrustedSigner(key_hex(&key(2).verifying_key().to_bytes())));
    }

    #[test]
    fn detached_signatures_cover_every_byte_and_name_untrusted_signers() {
        let binary = b"\x7fELF firmware".to_vec();
        let trusted = [key(1).verifying_key()];
        let sig = Signature::detached(&key(1), &binary);
        let back = Signature::from_slice(&sig.to_vec()).unwrap();
        assert_eq!(Signature::verify_detached(Some(&back), &binary, &trusted), Ok(()));
        assert_eq!(Signature::verify_detached(None, &binary, &[]), Ok(()));
        assert_eq!(Signature::verify_detached(None, &binary, &trusted), Err(PackageError::Unsigned));
        let mut tampered = binary.clone();
        tampered[5] ^= 1;
        assert_eq!(Signature::verify_detached(Some(&sig), &tampered, &[]), Err(PackageError::BadSignature));
        let theirs = Signature::detached(&key(2), &binary);
        assert!(matches!(
            Signature::verify_detached(Some(&theirs), &binary, &trusted),
            Err(PackageError::UntrustedSigner(_))
        ));
        assert!(Signature::from_slice(&sig.to_vec()[..95]).is_err());
    }

    #[test]
    fn keys_parse_from_hex_and_refuse_garbage() {
        let k = key(3).verifying_key();
        assert_eq!(parse_public_key(&format!(" {}\n", key_hex(&k.to_bytes()))).unwrap(), k);
        assert!(parse_key_hex("abc").is_err());
        assert!(parse_key_hex(&"zz".repeat(32)).is_err());
    }
}
