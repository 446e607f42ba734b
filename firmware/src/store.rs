//! The stores: where flashed model packages and firmware land, and how one becomes
//! active without ever leaving the box unable to inspect.
//!
//! ```text
//! <dir>/staging.part   bytes received so far (appended and fsynced chunk by chunk)
//! <dir>/staging.meta   "<size> <sha256>" of the upload in progress
//! <dir>/slot-a.<ext>   two slots: the active upload and the previous one
//! <dir>/slot-b.<ext>   (.kpkg for models, .bin for firmware)
//! <dir>/active         "a" or "b"
//! <dir>/trial          firmware only: the slot to start once, on trial
//! <dir>/settings.json  models only: settings saved over the link, per model
//! ```
//!
//! An upload resumes from the bytes already staged when the same upload (size and
//! sha256) is offered again. Commit checks size and hash, lets the caller verify the
//! bytes (a model: parse, signature, load and self-test), writes them to the inactive
//! slot (temp file, fsync, rename, fsync the folder) and only then flips `active` the
//! same way. Killed at any point, the box restarts with `active` naming a complete,
//! verified upload: the old one or the new one. Firmware is not made active by commit:
//! it is marked for one trial start, and the supervisor makes it active once it has
//! proved healthy.

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
    #[error("upload refused: {0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Camera frames kept for self-testing flashed models.
pub const SAMPLES: usize = 3;

/// Largest package accepted (a bound on a staging file a broken host could grow).
pub const MAX_PACKAGE: u64 = 256 << 20;

/// One of a store's two slots: uploads alternate between them, so the one running is
/// never the one being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// `slot-a.<ext>`.
    A,
    /// `slot-b.<ext>`.
    B,
}

impl Slot {
    /// The slot the next upload goes to when this one is active.
    pub fn other(self) -> Self {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"a"` or `"b"`, as the marker files and file names spell it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Slot::A => "a",
            Slot::B => "b",
        })
    }
}

/// What a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Model packages.
    Models,
    /// `kensa-fw` executables.
    Firmware,
}

impl Holds {
    fn ext(self) -> &'static str {
        match self {
            Holds::Models => "kpkg",
            Holds::Firmware => "bin",
        }
    }
}

/// Settings changed over the link, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// A decision threshold, for the model it was set for.
    pub threshold: Option<SavedThreshold>,
    /// Reject timing.
    pub reject: Option<SavedReject>,
}

impl Settings {
    /// The saved threshold if it was set for the model whose graph has `model_sha256`
    /// (a model flashed later brings its own threshold, and a saved one no longer applies).
    pub fn threshold_for(&self, model_sha256: &str) -> Option<f32> {
        self.threshold.as_ref().filter(|t| t.model == model_sha256 && t.value.is_finite()).map(|t| t.value)
    }
}

/// A threshold set over the link.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedThreshold {
    /// `onnx_sha256` of the model's manifest.
    pub model: String,
    /// The decision threshold.
    pub value: f32,
}

/// Reject timing set over the link.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedReject {
    /// Capture → pusher (ms).
    pub delay_ms: f32,
    /// Pulse width (ms).
    pub pulse_ms: f32,
}

/// A store folder.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    holds: Holds,
    /// Announced size and hash of the upload in progress.
    upload: Option<(u64, String)>,
    /// Test hook: stop (as if killed) after this many durable steps of a commit.
    #[cfg(test)]
    crash_after: Option<usize>,
}

impl Store {
    /// Open (creating) the model store `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_for(dir, Holds::Models)
    }

    /// Open (creating) `dir` holding `holds`.
    pub fn open_for(dir: &Path, holds: Holds) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut s = Self {
            dir: dir.to_path_buf(),
            holds,
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

    fn slot_path(&self, slot: Slot) -> PathBuf {
        self.path(&format!("slot-{slot}.{}", self.holds.ext()))
    }

    /// The slot a marker file (`active`, `trial`) names; `None` when it is missing or
    /// holds anything else.
    fn marked(&self, marker: &str) -> Option<Slot> {
        Slot::parse(fs::read_to_string(self.path(marker)).ok()?.trim())
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active slot and its file, if an upload was ever made active.
    pub fn active_slot(&self) -> Option<(Slot, PathBuf)> {
        let slot = self.marked("active")?;
        let p = self.slot_path(slot);
        p.is_file().then_some((slot, p))
    }

    /// The uploads to try, best first: the active slot, then the other one (an upload
    /// from before, kept as the fallback when the active one no longer loads). None
    /// while no upload was ever made active: a slot written by a commit that did not
    /// finish must not run.
    pub fn slots_to_try(&self) -> Vec<(Slot, PathBuf)> {
        let Some(first) = self.marked("active") else { return Vec::new() };
        [first, first.other()]
            .into_iter()
            .map(|s| (s, self.slot_path(s)))
            .filter(|(_, p)| p.is_file())
            .collect()
    }

    /// The active upload, if one was ever made active.
    pub fn active(&self) -> Option<PathBuf> {
        self.active_slot().map(|(_, p)| p)
    }

    /// Firmware: the slot marked for a trial start, cleared (durably) as it is taken, so
    /// that a trial interrupted by a power cut is not tried again.
    pub fn take_trial(&self) -> Result<Option<(Slot, PathBuf)>, StoreError> {
        let marker = self.path("trial");
        if !marker.exists() {
            return Ok(None);
        }
        let slot = self.marked("trial");
        fs::remove_file(&marker).map_err(io(&marker))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        Ok(slot.map(|s| (s, self.slot_path(s))).filter(|(_, p)| p.is_file()))
    }

    /// Firmware: make no slot active (the installed firmware runs again).
    pub fn clear_active(&self) -> Result<(), StoreError> {
        let marker = self.path("active");
        match fs::remove_file(&marker) {
            Ok(()) => File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&marker)(e)),
        }
    }

    /// Firmware: make `slot` active (it passed its trial).
    pub fn promote(&self, slot: Slot) -> Result<(), StoreError> {
        write_durably(&self.dir, "active", format!("{slot}\n").as_bytes(), false)
    }

    /// Keep `image` as sample `index` (of [`SAMPLES`], rotating) for self-testing models.
    pub fn save_sample(&self, index: usize, image: &image::DynamicImage) -> Result<(), StoreError> {
        let dir = self.path("samples");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut png = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| StoreError::Io { path: dir.clone(), source: std::io::Error::other(e) })?;
        write_durably(&dir, &format!("sample-{}.png", index % SAMPLES), &png, false)
    }

    /// Where the next sample goes: the first free index, else the oldest sample's.
    pub fn next_sample_index(&self) -> usize {
        let age =
            |i: usize| fs::metadata(self.path(&format!("samples/sample-{i}.png"))).and_then(|m| m.modified());
        (0..SAMPLES)
            .map(|i| (age(i).ok(), i))
            .min_by_key(|(t, i)| (t.is_some(), *t, *i))
            .map_or(0, |(_, i)| i)
    }

    /// The frames kept by [`Store::save_sample`] (unreadable ones are skipped).
    pub fn samples(&self) -> Vec<image::DynamicImage> {
        (0..SAMPLES)
            .map(|i| self.path(&format!("samples/sample-{i}.png")))
            .filter(|p| p.is_file())
            .filter_map(|p| image::open(&p).inspect_err(|e| tracing::warn!("{}: {e}", p.display())).ok())
            .collect()
    }

    /// The saved settings (none when never saved, or when the file is damaged: the
    /// configuration's and the model's values then apply).
    pub fn settings(&self) -> Settings {
        let path = self.path("settings.json");
        let Ok(text) = fs::read_to_string(&path) else { return Settings::default() };
        serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::error!("{}: {e}; using the configured settings", path.display());
            Settings::default()
        })
    }

    /// Keep `settings` across restarts.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), StoreError> {
        let text = serde_json::to_string_pretty(settings).expect("settings serialise");
        write_durably(&self.dir, "settings.json", text.as_bytes(), false)
    }

    /// The threshold saved for the model whose graph has `model_sha256`.
    pub fn saved_threshold(&self, model_sha256: &str) -> Option<f32> {
        self.settings().threshold_for(model_sha256)
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
        write_durably(&self.dir, "staging.meta", format!("{size} {sha256}\n").as_bytes(), false)?;
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

    /// Check the staged upload, let `verify` judge its bytes, and make it active.
    /// Returns the new active path.
    pub fn commit(
        &mut self,
        verify: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Result<PathBuf, StoreError> {
        self.commit_as(verify, "active")
    }

    /// Firmware: check the staged binary, let `verify` judge it, and mark it for one
    /// trial start (see [`Store::take_trial`]); `active` is left as it is.
    pub fn commit_trial(
        &mut self,
        verify: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Result<PathBuf, StoreError> {
        self.commit_as(verify, "trial")
    }

    fn commit_as(
        &mut self,
        verify: impl FnOnce(&[u8]) -> Result<(), String>,
        marker: &str,
    ) -> Result<PathBuf, StoreError> {
        let (size, sha) = self.upload.clone().ok_or(StoreError::NoUpload)?;
        let part = self.path("staging.part");
        let bytes = fs::read(&part).map_err(io(&part))?;
        if bytes.len() as u64 != size {
            return Err(StoreError::Mismatch(format!("{} of {size} bytes received", bytes.len())));
        }
        let got = kensa_shared::hex(&sha2::Sha256::digest(&bytes));
        if got != sha {
            return Err(StoreError::Mismatch(format!("sha256 {got}, announced {sha}")));
        }
        verify(&bytes).map_err(StoreError::Refused)?;
        let next = self.marked("active").map_or(Slot::A, Slot::other);
        self.step("verified")?;
        let slot = format!("slot-{next}.{}", self.holds.ext());
        write_durably(&self.dir, &slot, &bytes, self.holds == Holds::Firmware)?;
        self.step("slot-written")?;
        write_durably(&self.dir, marker, format!("{next}\n").as_bytes(), false)?;
        self.step("switched")?;
        for name in ["staging.meta", "staging.part"] {
            let _ = fs::remove_file(self.path(name));
        }
        self.upload = None;
        self.step("cleaned-up")?;
        Ok(self.path(&slot))
    }

    /// A durable step of a commit done. Tests stop here as if killed; a build with the
    /// `fault-injection` feature holds here for a SIGKILL when `KENSA_FW_HOLD_AT` names
    /// the step, so that end-to-end tests can kill the real daemon at every step.
    #[allow(clippy::unnecessary_wraps)]
    fn step(&mut self, name: &str) -> Result<(), StoreError> {
        #[cfg(feature = "fault-injection")]
        if std::env::var("KENSA_FW_HOLD_AT").is_ok_and(|at| at == name) {
            eprintln!("fault injection: holding at commit step {name}");
            tracing::warn!("fault injection: holding at commit step {name}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        let _ = name;
        #[cfg(test)]
        if let Some(n) = &mut self.crash_after {
            if *n == 0 {
                return Err(StoreError::Refused("killed".into()));
            }
            *n -= 1;
        }
        Ok(())
    }
}

/// `dir/name` ← `bytes`, all or nothing: temp file, fsync, rename, fsync the folder.
fn write_durably(dir: &Path, name: &str, bytes: &[u8], executable: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    let written = (|| {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        if executable {
            f.set_permissions(fs::Permissions::from_mode(0o755)).map_err(io(&tmp))?;
        }
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &dest).map_err(io(&dest))
    })();
    if written.is_err() {
        // A full disk leaves no half-written temp file behind to fill it further.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        kensa_shared::hex(&sha2::Sha256::digest(b))
    }

    #[test]
    fn a_write_that_fails_leaves_no_temp_file_and_the_old_file_stands() {
        let d = tempfile::tempdir().unwrap();
        write_durably(d.path(), "active", b"a\n", false).unwrap();
        // A folder where the file should go: the rename fails, as on a full or broken disk.
        fs::create_dir(d.path().join("settings.json")).unwrap();
        fs::write(d.path().join("settings.json").join("keep"), b"x").unwrap();
        let err = write_durably(d.path(), "settings.json", b"{}", false).unwrap_err();
        assert!(err.to_string().contains("settings.json"), "{err}");
        let left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!left.iter().any(|n| n.ends_with(".tmp")), "temp file left behind: {left:?}");
        assert_eq!(fs::read(d.path().join("active")).unwrap(), b"a\n");
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
        assert_eq!(fs::read(&a).unwrap(), pkg, "the previous package is kept");
        // The active one first, the one before it as the fallback.
        let tried: Vec<Slot> = s.slots_to_try().into_iter().map(|(slot, _)| slot).collect();
        assert_eq!(tried, [Slot::B, Slot::A]);
    }

    #[test]
    fn a_slot_never_made_active_is_not_tried() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        // A commit killed after writing its slot, before the `active` pointer.
        fs::write(d.path().join("slot-a.kpkg"), b"package").unwrap();
        assert!(s.slots_to_try().is_empty());
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

    #[test]
    fn firmware_is_marked_for_one_trial_and_active_only_once_promoted() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open_for(d.path(), Holds::Firmware).unwrap();
        upload(&mut s, b"firmware 1");
        let first = s.commit_trial(|_| Ok(())).unwrap();
        assert!(first.ends_with("slot-a.bin"));
        assert_eq!(fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o755, "runnable");
        assert_eq!(s.active(), None, "not active before its trial");
        assert_eq!(s.take_trial().unwrap(), Some((Slot::A, first.clone())));
        assert_eq!(s.take_trial().unwrap(), None, "a trial is started once, never twice");
        s.promote(Slot::A).unwrap();
        assert_eq!(s.active(), Some(first.clone()));

        upload(&mut s, b"firmware 2");
        let second = s.commit_trial(|_| Ok(())).unwrap();
        assert!(second.ends_with("slot-b.bin"), "the other slot; the running one is kept");
        assert_eq!(s.take_trial().unwrap().map(|t| t.0), Some(Slot::B));
        // Not promoted (it failed its health check): the first stays active.
        assert_eq!(s.active_slot(), Some((Slot::A, first)));
    }

    #[test]
    fn samples_rotate_over_a_few_files_and_damaged_ones_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(s.samples().is_empty());
        assert_eq!(s.next_sample_index(), 0);
        for i in 0..5u8 {
            let img = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 6, image::Luma([i])));
            s.save_sample(i as usize, &img).unwrap();
        }
        let mut levels: Vec<u8> = s.samples().iter().map(|m| m.to_luma8()[(0, 0)][0]).collect();
        levels.sort();
        assert_eq!(levels, [2, 3, 4], "the newest {SAMPLES} are kept");
        assert!(s.next_sample_index() < SAMPLES);
        fs::write(d.path().join("samples/sample-0.png"), b"not a png").unwrap();
        assert_eq!(s.samples().len(), SAMPLES - 1);
    }

    #[test]
    fn a_saved_threshold_applies_to_its_own_model_only() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.saved_threshold("m1"), None);
        let reject = SavedReject { delay_ms: 640.0, pulse_ms: 30.0 };
        let saved = Settings {
            threshold: Some(SavedThreshold { model: "m1".into(), value: 0.75 }),
            reject: Some(reject),
        };
        s.save_settings(&saved).unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.saved_threshold("m1"), Some(0.75), "survives a restart");
        assert_eq!(s.saved_threshold("m2"), None, "a new model brings its own threshold");
        assert_eq!(s.settings().reject, Some(reject));
        fs::write(d.path().join("settings.json"), b"{garbage").unwrap();
        assert_eq!(s.saved_threshold("m1"), None, "a damaged file is ignored, not fatal");
    }
}
