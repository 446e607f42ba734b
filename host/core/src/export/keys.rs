//! Signing: ed25519 key pairs (`kensa keygen`), package signatures, and detached
//! signatures of firmware binaries (`kensa sign`).

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use kensa_shared::package::{key_hex, parse_key_hex};

use crate::error::{Error, Result, fail};

/// A secret key written by `kensa keygen`.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading signing key", path))?;
    let seed = parse_key_hex(&text)
        .map_err(|e| Error::Key(format!("signing key {} is not a kensa secret key: {e}", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// `kensa sign`: a detached signature of `file` (a firmware binary) as `<file>.sig`.
pub fn sign_file(file: &Path, key: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(file).map_err(Error::io("reading", file))?;
    let sig = kensa_shared::package::Signature::detached(&read_signing_key(key)?, &bytes);
    let out = signature_path(file);
    std::fs::write(&out, sig.to_vec()).map_err(Error::io("writing", &out))?;
    Ok(out)
}

/// Where `kensa sign` puts the signature of `file`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// `kensa keygen`: `<stem>.key` (secret, owner-only) and `<stem>.pub`, as hex. Refuses to
/// overwrite a key.
pub fn keygen(stem: &Path) -> Result<(PathBuf, PathBuf)> {
    let secret = stem.with_extension("key");
    let public = stem.with_extension("pub");
    for p in [&secret, &public] {
        if p.exists() {
            fail!(Key, "{} exists; not overwriting a key", p.display());
        }
    }
    let mut seed = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut seed);
    let key = SigningKey::from_bytes(&seed);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&secret).map_err(Error::io("creating", &secret))?;
    std::io::Write::write_all(&mut f, format!("{}\n", key_hex(&seed)).as_bytes())
        .map_err(Error::io("writing", &secret))?;
    std::fs::write(&public, format!("{}\n", key_hex(&key.verifying_key().to_bytes())))
        .map_err(Error::io("writing", &public))?;
    Ok((secret, public))
}
