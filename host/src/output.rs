//! Where commands write: checked before any work starts, written atomically.
//!
//! A training run that finds its output folder missing after eight minutes, or a
//! `predictions.json` cut short by Ctrl-C, loses work; so every command checks its
//! output path first, and files are written beside their target and renamed over it.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Check that a file can be written at `path`: its folder exists and takes new files,
/// and `path` is not a folder.
pub fn check_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a folder; give a file name to write", path.display());
    }
    let dir = parent(path);
    if !dir.is_dir() {
        bail!("cannot write {}: folder {} does not exist", path.display(), dir.display());
    }
    probe(dir).with_context(|| format!("cannot write {}", path.display()))
}

/// Create the folder `dir` (and its parents) and check that it takes new files.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} exists and is not a folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    probe(dir)
}

/// Write `bytes` to `path` so that it holds either its old content or all of `bytes`.
/// The file gets the mode a plain create would give it (0666 less the umask), not the
/// private mode of a temporary file: models and reports are made to be shared.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kensa-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(parent(path))
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create and remove a file in `dir`: the only sure test that it can be written.
fn probe(dir: &Path) -> Result<()> {
    tempfile::Builder::new()
        .prefix(".kensa-probe-")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| format!("folder {} cannot be written", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_is_refused_before_any_work() {
        let d = tempfile::tempdir().unwrap();
        let err = check_file(&d.path().join("nope/m.kmodel")).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        let err = check_file(d.path()).unwrap_err();
        assert!(format!("{err:#}").contains("is a folder"), "{err:#}");
        check_file(&d.path().join("m.kmodel")).unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "the probe leaves nothing behind");
    }

    #[test]
    fn a_file_in_the_way_of_a_folder_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("report");
        std::fs::write(&f, b"x").unwrap();
        assert!(prepare_dir(&f).is_err());
        prepare_dir(&d.path().join("a/b")).unwrap();
        assert!(d.path().join("a/b").is_dir());
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        write_atomic(&f, b"first").unwrap();
        write_atomic(&f, b"second").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"second");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        let plain = tempfile::tempdir().unwrap();
        let plain = plain.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert_eq!(
            mode,
            std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777,
            "as a plain create"
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
