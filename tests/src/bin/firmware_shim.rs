//! A small firmware image for the flashing tests: it becomes the daemon named by
//! `KENSA_E2E_DAEMON`, arguments and environment unchanged. It stands in for a new
//! `kensa-fw` build, which in a debug build is 60 MB: minutes over even a fast line.
//!
//! A build whose file ends with `crash after N s` runs the daemon as its child and
//! crashes (exit 101) N seconds after it started: a firmware that passes its trial and
//! then fails in the field.

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

fn main() {
    let daemon = std::env::var_os("KENSA_E2E_DAEMON").expect("KENSA_E2E_DAEMON names the daemon to run");
    let mut cmd = std::process::Command::new(&daemon);
    cmd.args(std::env::args_os().skip(1));
    let Some(after) = crash_after() else {
        let err = cmd.exec();
        eprintln!("firmware shim: cannot run {}: {err}", std::path::Path::new(&daemon).display());
        std::process::exit(127);
    };
    let mut child = cmd.spawn().expect("starting the daemon");
    let started = Instant::now();
    while started.elapsed() < after {
        if let Ok(Some(status)) = child.try_wait() {
            std::process::exit(status.code().unwrap_or(1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("firmware shim: crashing after {} s", after.as_secs());
    std::process::exit(101);
}

/// `N` from a trailing `crash after N s` in this executable's file.
fn crash_after() -> Option<Duration> {
    let me = std::fs::read(std::env::current_exe().ok()?).ok()?;
    let tail = String::from_utf8_lossy(&me[me.len().saturating_sub(64)..]).into_owned();
    let n = tail.rsplit("crash after ").next()?.strip_suffix(" s\n")?;
    n.trim().parse().ok().map(Duration::from_secs)
}
