//! `kensa keygen` and `kensa sign`.

use std::path::Path;

use anyhow::Result;
use kensa_core::export::keys;

/// Make a key pair at `<stem>.key` / `<stem>.pub`.
pub fn keygen(stem: &Path) -> Result<()> {
    let (secret, public) = keys::keygen(stem)?;
    say!("wrote secret key {} (keep it private) and public key {}", secret.display(), public.display());
    Ok(())
}

/// Write `<file>.sig` for a firmware binary.
pub fn sign(file: &Path, key: &Path) -> Result<()> {
    let out = keys::sign_file(file, key)?;
    say!("wrote {}", out.display());
    Ok(())
}
