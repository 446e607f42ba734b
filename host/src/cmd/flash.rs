//! `kensa flash`: a model package or a firmware binary onto a box over its serial line,
//! resumable, then switched over (and for firmware, watched until it proves healthy).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kensa_core::export::signature_path;
use kensa_shared::wire::endpoint::{Committed, FlashBegin, FlashChunk, FlashCommit, Info};
use kensa_shared::wire::{FirmwareState, FlashTarget};

use crate::link::{ClientError, Link};
use crate::progress::Bar;

/// Flash `package`, or with `firmware` that binary, waiting up to `wait` s for a new
/// firmware to prove healthy.
pub fn run(port: &Path, baud: u32, package: Option<&Path>, firmware: Option<&Path>, wait: u64) -> Result<()> {
    match (package, firmware) {
        (Some(package), _) => flash(port, baud, package),
        (None, Some(binary)) => flash_firmware(port, baud, binary, Duration::from_secs(wait)),
        (None, None) => bail!("give a model package or --firmware <binary>"),
    }
}

/// Upload `bytes` as `target` to the box on `port` and commit them; returns the commit's
/// answer. Resumes from the box's staged bytes, after a lost link within this run or a
/// previous run.
fn upload(
    port: &Path,
    baud: u32,
    bytes: &[u8],
    target: FlashTarget,
    commit_wait: Duration,
) -> Result<(Committed, u32)> {
    use kensa_shared::wire::FLASH_CHUNK;
    let sha256 = kensa_shared::sha256_hex(bytes);
    let size = bytes.len() as u64;
    let pb = Bar::standalone("flashing", bytes.len());
    let mut reconnects = 0;
    let reply = loop {
        let attempt = (|| -> Result<Committed> {
            let mut link = Link::open(port, baud)?;
            let begin = FlashBegin { target: target.clone(), size, sha256: sha256.clone() };
            let mut at = link.call(begin)?;
            if at > 0 {
                say!("resuming at byte {at} of {size}");
            }
            while at < size {
                pb.set_position(at);
                let end = (at as usize + FLASH_CHUNK).min(bytes.len());
                let data = bytes[at as usize..end].to_vec();
                match link.call(FlashChunk { offset: at, data })? {
                    next if next > at => at = next,
                    next => bail!("the box did not take the bytes at {at} (it holds {next})"),
                }
            }
            pb.set_position(size);
            Ok(link.call_within(FlashCommit, commit_wait)?)
        })();
        match attempt {
            Ok(reply) => break reply,
            // A refusal by the box (damaged, unsigned) will not change on retry.
            Err(e) if refused(&e) || reconnects >= 5 => return Err(e),
            Err(e) => {
                reconnects += 1;
                tracing::warn!("{e:#}; reconnecting ({reconnects}/5)");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    pb.finish_and_clear();
    Ok((reply, reconnects))
}

/// The box said no (damaged, unsigned): unlike a lost link, a retry gets the same answer.
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<ClientError>(), Some(ClientError::Refused { .. })))
}

fn rate(size: usize, started: std::time::Instant, reconnects: u32) -> String {
    let secs = started.elapsed().as_secs_f64();
    let again = if reconnects > 0 { format!(", {reconnects} reconnects") } else { String::new() };
    format!("{size} bytes in {secs:.1} s, {:.0} B/s{again}", size as f64 / secs)
}

/// Upload `package` to the box on `port` and switch it over.
fn flash(port: &Path, baud: u32, package: &Path) -> Result<()> {
    let bytes = std::fs::read(package).with_context(|| format!("reading {}", package.display()))?;
    let pkg = kensa_shared::package::Package::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a model package: {e}", package.display()))?;
    // What the box accepts, before a long upload it would refuse at the end.
    let info = Link::open(port, baud)?.call(Info)?;
    if info.package.trusted_keys > 0 && pkg.signature.is_none() {
        bail!(
            "{} is not signed, and the box accepts only packages signed by one of its {} trusted keys: \
             export it with --sign",
            package.display(),
            info.package.trusted_keys
        );
    }
    let started = std::time::Instant::now();
    // Verifying, loading and self-testing the model takes the box a while.
    let (reply, reconnects) = upload(port, baud, &bytes, FlashTarget::Model, Duration::from_secs(30))?;
    let Committed::Model(name) = reply else { bail!("the box restarted instead of taking the model") };
    say!(
        "flashed {} ({} {:?}, {}); the box now runs {name}",
        package.display(),
        pkg.manifest.kind,
        pkg.manifest.precision,
        rate(bytes.len(), started, reconnects)
    );
    Ok(())
}

/// Upload `binary`, let the box restart into it on trial, and
/// wait until it reports healthy (or the box has gone back to its previous firmware).
fn flash_firmware(port: &Path, baud: u32, binary: &Path, wait: Duration) -> Result<()> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let sig_path = signature_path(binary);
    let signature = match std::fs::read(&sig_path) {
        Ok(sig) => {
            kensa_shared::package::Signature::from_slice(&sig)
                .with_context(|| format!("{} is not a kensa signature", sig_path.display()))?;
            Some(sig)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    let sha256 = kensa_shared::sha256_hex(&bytes);
    let started = std::time::Instant::now();
    let (reply, reconnects) =
        upload(port, baud, &bytes, FlashTarget::Firmware { signature }, Duration::from_secs(30))?;
    if let Committed::Model(name) = reply {
        bail!("the box took the firmware for a model ({name})");
    }
    say!(
        "uploaded {} ({}); the box restarts into it on trial",
        binary.display(),
        rate(bytes.len(), started, reconnects)
    );
    let deadline = std::time::Instant::now() + wait;
    let mut trial_seen = false;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let info = Link::open(port, baud).and_then(|mut l| l.call(Info));
        let Ok(info) = info else { continue }; // restarting: not answering yet
        match (info.firmware_sha256 == sha256, info.firmware_state) {
            (true, FirmwareState::Committed) => {
                say!("the box runs the new firmware ({}) and reported healthy", &sha256[..12]);
                return Ok(());
            }
            (true, _) => {
                if !trial_seen {
                    say!("the new firmware is running on trial; waiting for it to inspect a part");
                    trial_seen = true;
                }
            }
            (false, _) => bail!(
                "the new firmware ({}) did not prove healthy: the box went back to its previous firmware ({}) \
                 and is inspecting with it",
                &sha256[..12],
                &info.firmware_sha256[..info.firmware_sha256.len().min(12)]
            ),
        }
    }
    bail!("the box on {} did not come back within {} s", port.display(), wait.as_secs())
}
