//! A small firmware image for the flashing tests: it becomes the daemon named by
//! `KENSA_E2E_DAEMON`, arguments and environment unchanged. It stands in for a new
//! `kensa-fw` build, which in a debug build is 60 MB: minutes over even a fast line.

use std::os::unix::process::CommandExt;

fn main() {
    let daemon = std::env::var_os("KENSA_E2E_DAEMON").expect("KENSA_E2E_DAEMON names the daemon to run");
    let err = std::process::Command::new(&daemon).args(std::env::args_os().skip(1)).exec();
    eprintln!("firmware shim: cannot run {}: {err}", std::path::Path::new(&daemon).display());
    std::process::exit(127);
}
