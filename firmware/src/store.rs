//! The model store: where flashed packages land and how one becomes active without ever
//! leaving the box without a working model.
//!
//! ```text
//! <dir>/staging.part   bytes received so far (appended and fsynced chunk by chunk)
//! <dir>/staging.meta   "<size> <sha256>" of the upload in progress
//! <dir>/slot-a.kpkg    two slots: the active package and the previous one
//! <dir>/slot-b.kpkg
//! <dir>/active         "a" or "b"
//! ```
//!
//! An upload resumes from the bytes already staged when the same package (size and
//! sha256) is offered again. Commit checks size and hash, lets the caller verify the
//! package (parse, signature, load and self-test), writes it to the inactive slot
//! (temp file, fsync, rename, fsync the folder) and only then flips `active` the same way.
//! Killed at any point, the box restarts with `active` naming a complete, verified
//! package: the old one or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File-system failure, with the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A chunk that does not continue the staged bytes.
    #[error("chunk at offset {got} does not continue the upload at {expected}")]
    Offset {
        /// Where the chunk claims to start.
        got: u64,
        /// Bytes staged so far.
        expected: u64,
    },
    /// No upload was begun.
    #[error("no upload in progress: begin one first")]
    NoUpload,
    /// More bytes than announced.
    #[error("upload would exceed its announced {0} bytes")]
    TooLong(u64),
    /// Size or hash differ from what was announced.
    #[error("upload is incomplete or damaged: {0}")]
    Mismatch(String),
    /// The caller's verification refused the package.
    #[error("package refused: {0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Largest package accepted (a bound on a staging file a broken host could grow).
pub const MAX_PACKAGE: u64 = 256 << 20;

/// A store folder.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Announced size and hash of the upload in progress.
    upload: Option<(u64, String)>,
    /// Test hook: stop (as if killed) after this many durable steps of a commit.
    #[cfg(test)]
    crash_after: Option<usize>,
}

impl Store {
    /// Open (creating) `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut s = Self {
            dir: dir.to_path_buf(),
            upload: None,
            #[cfg(test)]
            crash_after: None,
        };
        s.upload = fs::read_to_string(s.path("staging.meta")).ok().and_then(|m| {
            let (size, sha) = m.trim().split_once(' ')?;
            Some((size.parse().ok()?, sha.to_string()))
        });
        Ok(s)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The active package, if a package was ever committed.
    pub fn active(&self) -> Option<PathBuf> {
        let slot = fs::read_to_string(self.path("active")).ok()?;
        let p = self.path(&format!("slot-{}.kpkg", slot.trim()));
        p.is_file().then_some(p)
    }

    /// Start (or resume) uploading a package of `size` bytes with `sha256` (hex);
    /// returns how many bytes are already staged.
    pub fn begin(&mut self, size: u64, sha256: &str) -> Result<u64, StoreError> {
        if size == 0 || size > MAX_PACKAGE {
            return Err(StoreError::Mismatch(format!("size {size} is outside 1..={MAX_PACKAGE}")));
        }
        let part = self.path("staging.part");
        if self.upload.as_ref().is_some_and(|(s, h)| *s == size && h == sha256) {
            let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if have <= size {
                return Ok(have);
            }
        }
        File::create(&part).map_err(io(&part))?;
        write_durably(&self.dir, "staging.meta", format!("{size} {sha256}\n").as_bytes())?;
        self.upload = Some((size, sha256.to_string()));
        Ok(0)
    }

    /// Append `data` at `offset` (which must be the staged length); returns the new length.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<u64, StoreError> {
        let (size, _) = self.upload.clone().ok_or(StoreError::NoUpload)?;
        let part = self.path("staging.part");
        let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        // A chunk sent again because its acknowledgement was lost: already staged (the
        // hash at commit catches any difference).
        if offset < have && offset + data.len() as u64 <= have {
            return Ok(have);
        }
        if offset != have {
            return Err(StoreError::Offset { got: offset, expected: have });
        }
        if have + data.len() as u64 > size {
            return Err(StoreError::TooLong(size));
        }
        let mut f = OpenOptions::new().append(true).create(true).open(&part).map_err(io(&part))?;
        f.write_all(data).map_err(io(&part))?;
        f.sync_data().map_err(io(&part))?;
        Ok(have + data.len() as u64)
    }

    /// Check the staged package, let `verify` judge its bytes, and make it active.
    /// Returns the new active path.
    pub fn commit(
        &mut self,
        verify: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Result<PathBuf, StoreError> {
        let (size, sha) = self.upload.clone().ok_or(StoreError::NoUpload)?;
        let part = self.path("staging.part");
        let bytes = fs::read(&part).map_err(io(&part))?;
        if bytes.len() as u64 != size {
            return Err(StoreError::Mismatch(format!("{} of {size} bytes received", bytes.len())));
        }
        let got = hex(&sha2::Sha256::digest(&bytes));
        if got != sha {
            return Err(StoreError::Mismatch(format!("sha256 {got}, announced {sha}")));
        }
        verify(&bytes).map_err(StoreError::Refused)?;
        let next = match fs::read_to_string(self.path("active")).ok().as_deref().map(str::trim) {
            Some("a") => "b",
            _ => "a",
        };
        self.step()?;
        write_durably(&self.dir, &format!("slot-{next}.kpkg"), &bytes)?;
        self.step()?;
        write_durably(&self.dir, "active", format!("{next}\n").as_bytes())?;
        self.step()?;
        for name in ["staging.meta", "staging.part"] {
            let _ = fs::remove_file(self.path(name));
        }
        self.upload = None;
        Ok(self.path(&format!("slot-{next}.kpkg")))
    }

    #[cfg(test)]
    fn step(&mut self) -> Result<(), StoreError> {
        match &mut self.crash_after {
            Some(0) => Err(StoreError::Refused("killed".into())),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    #[cfg(not(test))]
    fn step(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// `dir/name` ← `bytes`, all or nothing: temp file, fsync, rename, fsync the folder.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &dest).map_err(io(&dest))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|v| format!("{v:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex(&sha2::Sha256::digest(b))
    }

    fn upload(s: &mut Store, pkg: &[u8]) {
        let mut at = s.begin(pkg.len() as u64, &sha(pkg)).unwrap();
        for chunk in pkg[at as usize..].chunks(7) {
            at = s.write(at, chunk).unwrap();
        }
    }

    #[test]
    fn an_upload_resumes_after_a_restart_and_commits_to_the_other_slot() {
        let d = tempfile::tempdir().unwrap();
        let pkg: Vec<u8> = (0..100u8).collect();
        let mut s = Store::open(d.path()).unwrap();
        assert_eq!(s.active(), None);
        assert_eq!(s.begin(100, &sha(&pkg)).unwrap(), 0);
        assert_eq!(s.write(0, &pkg[..40]).unwrap(), 40);
        assert!(matches!(s.write(50, &pkg[50..60]), Err(StoreError::Offset { got: 50, expected: 40 })));
        assert_eq!(s.write(30, &pkg[30..40]).unwrap(), 40, "a repeated chunk is acknowledged again");
        drop(s); // the cable is pulled, the box restarts

        let mut s = Store::open(d.path()).unwrap();
        assert_eq!(s.begin(100, &sha(&pkg)).unwrap(), 40, "resumes from the staged bytes");
        assert!(matches!(s.commit(|_| Ok(())), Err(StoreError::Mismatch(_))), "incomplete");
        s.write(40, &pkg[40..]).unwrap();
        assert!(matches!(s.write(100, b"x"), Err(StoreError::TooLong(100))));
        let a = s.commit(|_| Ok(())).unwrap();
        assert!(a.ends_with("slot-a.kpkg") && s.active() == Some(a.clone()));
        assert_eq!(fs::read(&a).unwrap(), pkg);

        let pkg2 = vec![9u8; 30];
        upload(&mut s, &pkg2);
        let b = s.commit(|_| Ok(())).unwrap();
        assert!(b.ends_with("slot-b.kpkg"));
        assert_eq!(fs::read(a).unwrap(), pkg, "the previous package is kept");
    }

    #[test]
    fn damaged_or_refused_uploads_never_become_active() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(d.path()).unwrap();
        let good = b"good package".to_vec();
        upload(&mut s, &good);
        let active = s.commit(|_| Ok(())).unwrap();

        let other = b"other package".to_vec();
        s.begin(other.len() as u64, &sha(b"something else")).unwrap();
        s.write(0, &other).unwrap();
        assert!(matches!(s.commit(|_| Ok(())), Err(StoreError::Mismatch(m)) if m.contains("sha256")));
        upload(&mut s, &other);
        let err = s.commit(|_| Err("signed by an unknown key".into())).unwrap_err();
        assert!(err.to_string().contains("unknown key"), "{err}");
        assert_eq!(s.active(), Some(active.clone()));
        assert_eq!(fs::read(active).unwrap(), good);
        assert!(matches!(s.begin(0, "x"), Err(StoreError::Mismatch(_))));
    }

    #[test]
    fn killed_at_any_step_of_a_commit_the_box_has_the_old_or_the_new_package() {
        let (old, new) = (b"old package".to_vec(), b"new package, longer".to_vec());
        for crash in 0..4 {
            let d = tempfile::tempdir().unwrap();
            let mut s = Store::open(d.path()).unwrap();
            upload(&mut s, &old);
            s.commit(|_| Ok(())).unwrap();
            upload(&mut s, &new);
            s.crash_after = Some(crash);
            let _ = s.commit(|_| Ok(()));
            drop(s);
            let s = Store::open(d.path()).unwrap();
            let active = fs::read(s.active().expect("always an active package")).unwrap();
            assert!(active == old || active == new, "crash after step {crash}");
            if crash >= 2 {
                assert_eq!(active, new, "crash after step {crash}: the flip was durable");
            }
        }
    }
}
