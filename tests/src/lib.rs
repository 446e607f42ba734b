//! Helpers for the end-to-end tests: locate (building if needed) the real `kensa` and
//! `kensa-fw` executables, and give each test a fresh temporary folder.
//!
//! A test crate gets no `CARGO_BIN_EXE_*` for other packages' binaries, so the binaries
//! are built once per test run with the same cargo and profile that built the tests.

#![deny(missing_docs)]

pub mod broker;
pub mod hil;
pub mod layering;
pub mod line;
pub mod weights;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;

/// The folder holding the binaries of the profile the tests were built with.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // .../target/<triple?>/<profile>/deps/e2e-<hash>
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // Same target selection as `cargo test --workspace`, so features unify identically and
        // this is a no-op after the outer build rather than a second build of every dependency.
        cmd.args(["build", "--quiet", "--workspace", "--tests", "--bins", "--profile"]);
        cmd.arg(if profile == "debug" { "dev" } else { profile.as_str() });
        if let Some(triple) = dir.parent().and_then(Path::file_name).and_then(|n| n.to_str())
            && triple.contains('-')
        {
            cmd.args(["--target", triple]);
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building kensa and kensa-fw failed");
        dir
    })
}

/// A command for the `kensa` host CLI.
pub fn kensa() -> Command {
    Command::new(bin_dir().join("kensa"))
}

/// A command for the `kensa-fw` daemon.
pub fn kensa_fw() -> Command {
    Command::new(bin_dir().join("kensa-fw"))
}

/// The `kensa-fw` executable.
pub fn kensa_fw_path() -> PathBuf {
    bin_dir().join("kensa-fw")
}

/// A small firmware image that runs the daemon named by `KENSA_E2E_DAEMON`
/// (`src/bin/firmware_shim.rs`).
pub fn firmware_shim() -> PathBuf {
    bin_dir().join("firmware_shim")
}

/// A running process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd`, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run `cmd` expecting failure; returns its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Spawn `cmd` with its output discarded, killed when the handle drops.
pub fn start_quiet(cmd: &mut Command) -> Running {
    Running(cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap())
}

/// Wait until `cond` holds, for at most `secs`; whether it did.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}

/// Write a small synthetic MVTec-layout dataset of 64 px images at `out`: `train` good
/// training images, `test_good` good and `test_defect` defective test images.
pub fn synth_small(out: &Path, train: u32, test_good: u32, test_defect: u32) {
    run_ok(
        kensa()
            .args(["synth", "--size", "64"])
            .args(["--train", &train.to_string(), "--test-good", &test_good.to_string()])
            .args(["--test-defect", &test_defect.to_string(), "--out"])
            .arg(out),
    );
}

/// A fresh temporary folder, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kensa-e2e-").tempdir().expect("temp dir")
}

/// The repository root (the workspace holding this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}
