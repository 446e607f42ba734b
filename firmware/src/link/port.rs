//! The serial device: opened (retrying while it is missing), one session at a time,
//! reopened when the line goes away.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::PortEnd;
use super::session::session;

/// Serve `path` until `stop`: open (retrying with backoff while it is missing), run a
/// session, reopen when the line goes away.
pub fn run_port(path: PathBuf, baud: u32, mut end: PortEnd, stop: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) {
        match serialport::new(path.to_string_lossy(), baud).timeout(Duration::from_millis(20)).open_native() {
            Ok(mut port) => {
                tracing::info!("diagnostics link on {}", path.display());
                backoff = Duration::from_millis(100);
                reported = false;
                if let Err(e) = session(&mut port, &mut end, &stop) {
                    tracing::warn!("diagnostics link on {} lost: {e}", path.display());
                }
                end.watching.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                if !reported {
                    tracing::warn!("cannot open diagnostics port {}: {e}; retrying", path.display());
                    reported = true;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
