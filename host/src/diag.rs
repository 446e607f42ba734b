//! `kensa diag`: what a box sees and does, over its serial line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kensa_shared::verdict::Verdict;
use kensa_shared::wire::{Event, FirmwareState, FlashTarget, Inspection, Reply, RequestBody};

use crate::link::Link;

/// One diagnostics action.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// Versions, model, source, threshold, uptime.
    Info,
    /// Counters since the box started.
    Status,
    /// One line per part as the box decides (Ctrl-C to stop).
    Watch {
        /// Stop after this many parts.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Change settings from the next part on; a box with a store keeps them across
    /// restarts (a threshold until another model is flashed).
    #[command(group = clap::ArgGroup::new("setting").required(true).multiple(true))]
    Set {
        /// Decision threshold (NG when score ≥ threshold; supervised scores can be negative).
        #[arg(long, allow_negative_numbers = true, group = "setting")]
        threshold: Option<f32>,
        /// Capture → pusher delay (ms): moves the stroke to where the part is.
        #[arg(long, group = "setting")]
        delay_ms: Option<f32>,
        /// Pusher pulse width (ms).
        #[arg(long, group = "setting")]
        pulse_ms: Option<f32>,
    },
    /// Fire the reject output once (wiring check).
    TestReject,
    /// Clear a raised line-stop output.
    ClearLineStop,
    /// Rebuild the box's pipeline: reopen camera and outputs, reload model and settings.
    Restart,
    /// The box's newest log lines.
    Logs,
    /// Save what the camera sees now (a thumbnail of the latest frame) as PNG.
    Snapshot {
        /// PNG to write.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Save thumbnails of the most recent NG parts as PNG.
    LastNg {
        /// Folder to write into.
        #[arg(short, long)]
        out: PathBuf,
        /// Most thumbnails.
        #[arg(long, default_value_t = 8)]
        max: u8,
    },
}

fn line(i: &Inspection) -> String {
    let verdict = match i.verdict {
        Verdict::Ok => "OK",
        Verdict::Ng => "NG",
        Verdict::Uninspected => "UNINSPECTED",
    };
    let score = if i.score.is_nan() { "      -".into() } else { format!("{:7.3}", i.score) };
    format!("part {:5}  {verdict:<11} score {score}  decided in {:6.1} ms", i.part, i.latency_us as f64 / 1e3)
}

fn save_thumbnail(t: &kensa_shared::wire::Thumbnail, path: &Path) -> Result<()> {
    let img = image::GrayImage::from_raw(t.width as u32, t.height as u32, t.pixels.clone())
        .context("thumbnail size does not match its pixels")?;
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

fn expect_done(r: Reply) -> Result<()> {
    match r {
        Reply::Done => Ok(()),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// Run `action` against the box on `port`.
pub fn run(port: &Path, baud: u32, action: &Action) -> Result<()> {
    let mut link = Link::open(port, baud)?;
    match action {
        Action::Info => {
            let Reply::Info(i) = link.call(RequestBody::Info)? else { bail!("unexpected answer to info") };
            let state = match i.firmware_state {
                FirmwareState::Unsupervised => "not supervised: firmware cannot be flashed",
                FirmwareState::Committed => "supervised",
                FirmwareState::Trial => "ON TRIAL: rolled back unless it reports healthy",
            };
            say!(
                "firmware  kensa-fw {} (protocol {}), sha256 {}",
                i.firmware_version,
                i.protocol,
                i.firmware_sha256
            );
            say!("          {state}");
            say!("model     {}", i.model.as_deref().unwrap_or("none"));
            say!("source    {}", i.source);
            let saved = |s: bool| if s { " (saved over the link)" } else { "" };
            say!("threshold {:.4}{}", i.threshold, saved(i.threshold_saved));
            say!(
                "reject    +{:.1} ms, {:.1} ms pulse{}",
                i.reject_delay_ms,
                i.reject_pulse_ms,
                saved(i.reject_saved)
            );
            say!("uptime    {} s", i.uptime_s);
            say!("line stop {}", if i.line_stopped { "RAISED" } else { "clear" });
        }
        Action::Status => {
            let Reply::Status(c) = link.call(RequestBody::Status)? else {
                bail!("unexpected answer to status")
            };
            say!(
                "parts {}  OK {}  NG {}  uninspected {} (overruns {})  rejects {} (merged {})  late {}  line stops {}",
                c.parts,
                c.ok,
                c.ng,
                c.uninspected,
                c.overruns,
                c.rejects,
                c.merged,
                c.late,
                c.line_stops
            );
        }
        Action::Watch { count } => {
            expect_done(link.call(RequestBody::Watch(true))?)?;
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                if let Some(Event::Inspection(i)) = link.next_event(Duration::from_secs(5))? {
                    say!("{}", line(&i));
                    seen += 1;
                }
            }
            link.call(RequestBody::Watch(false))?;
        }
        Action::Set { threshold, delay_ms, pulse_ms } => {
            let info = |link: &mut Link| match link.call(RequestBody::Info)? {
                Reply::Info(i) => Ok(i),
                other => bail!("unexpected answer to info: {other:?}"),
            };
            if let Some(t) = threshold {
                expect_done(link.call(RequestBody::SetThreshold(*t))?)?;
            }
            let reject = delay_ms.is_some() || pulse_ms.is_some();
            if reject {
                let now = info(&mut link)?;
                let (delay_ms, pulse_ms) =
                    (delay_ms.unwrap_or(now.reject_delay_ms), pulse_ms.unwrap_or(now.reject_pulse_ms));
                expect_done(link.call(RequestBody::SetReject { delay_ms, pulse_ms })?)?;
            }
            let i = info(&mut link)?;
            if threshold.is_some() {
                say!("threshold {:.4}", i.threshold);
            }
            if reject {
                say!("reject    +{:.1} ms, {:.1} ms pulse", i.reject_delay_ms, i.reject_pulse_ms);
            }
            if (threshold.is_none() || i.threshold_saved) && (!reject || i.reject_saved) {
                say!("saved: kept across restarts (a threshold until another model is flashed)");
            } else {
                say!("not saved: the box has no store, this lasts until it restarts");
            }
        }
        Action::Restart => {
            match link.call(RequestBody::Restart)? {
                Reply::Restarting => {}
                other => bail!("unexpected answer to restart: {other:?}"),
            }
            say!("the box is restarting its pipeline");
        }
        Action::TestReject => {
            expect_done(link.call(RequestBody::TestReject)?)?;
            say!("reject output fired");
        }
        Action::ClearLineStop => {
            expect_done(link.call(RequestBody::ClearLineStop)?)?;
            say!("line stop cleared");
        }
        Action::Logs => {
            let Reply::Logs(lines) = link.call(RequestBody::Logs)? else {
                bail!("unexpected answer to logs")
            };
            for l in &lines {
                say!("{l}");
            }
            if lines.is_empty() {
                say!("(no log lines at the box's log level)");
            }
        }
        Action::Snapshot { out } => {
            let Reply::Snapshot(t) = link.call(RequestBody::Snapshot)? else { bail!("unexpected answer") };
            let t = t.context("the box has not captured a frame yet")?;
            save_thumbnail(&t, out)?;
            say!("{}  -> {}", line(&t.inspection), out.display());
        }
        Action::LastNg { out, max } => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let mut saved = 0;
            for n in 0..*max {
                let Reply::LastNg(t) = link.call(RequestBody::LastNg(n))? else { bail!("unexpected answer") };
                let Some(t) = t else { break };
                let path = out.join(format!("part{:06}.png", t.inspection.part));
                save_thumbnail(&t, &path)?;
                say!("{}  -> {}", line(&t.inspection), path.display());
                saved += 1;
            }
            if saved == 0 {
                say!("no rejected part with a thumbnail yet");
            }
        }
    }
    if link.bad_frames > 0 {
        tracing::warn!("{} corrupt frames dropped on {}", link.bad_frames, port.display());
    }
    Ok(())
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
) -> Result<(Reply, u32)> {
    use kensa_shared::wire::FLASH_CHUNK;
    let sha256 = kensa_shared::sha256_hex(bytes);
    let size = bytes.len() as u64;
    let pb = crate::train::progress(bytes.len(), "flashing");
    let mut reconnects = 0;
    let reply = loop {
        let attempt = (|| -> Result<Reply> {
            let mut link = Link::open(port, baud)?;
            let begin = RequestBody::FlashBegin { target: target.clone(), size, sha256: sha256.clone() };
            let Reply::FlashOffset(mut at) = link.call(begin)? else {
                bail!("unexpected answer to flash begin")
            };
            if at > 0 {
                say!("resuming at byte {at} of {size}");
            }
            while at < size {
                pb.set_position(at);
                let end = (at as usize + FLASH_CHUNK).min(bytes.len());
                let data = bytes[at as usize..end].to_vec();
                match link.call(RequestBody::FlashChunk { offset: at, data })? {
                    Reply::FlashOffset(next) if next > at => at = next,
                    other => bail!("the box did not take the bytes at {at}: {other:?}"),
                }
            }
            pb.set_position(size);
            link.call_within(RequestBody::FlashCommit, commit_wait)
        })();
        match attempt {
            Ok(reply) => break reply,
            // A refusal by the box (damaged, unsigned) will not change on retry.
            Err(e) if e.chain().any(|c| c.is::<crate::link::Refused>()) || reconnects >= 5 => return Err(e),
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

fn rate(size: usize, started: std::time::Instant, reconnects: u32) -> String {
    let secs = started.elapsed().as_secs_f64();
    let again = if reconnects > 0 { format!(", {reconnects} reconnects") } else { String::new() };
    format!("{size} bytes in {secs:.1} s, {:.0} B/s{again}", size as f64 / secs)
}

/// `kensa flash`: upload `package` to the box on `port` and switch it over.
pub fn flash(port: &Path, baud: u32, package: &Path) -> Result<()> {
    let bytes = std::fs::read(package).with_context(|| format!("reading {}", package.display()))?;
    let pkg = kensa_shared::package::Package::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a model package: {e}", package.display()))?;
    let started = std::time::Instant::now();
    // Verifying, loading and self-testing the model takes the box a while.
    let (reply, reconnects) = upload(port, baud, &bytes, FlashTarget::Model, Duration::from_secs(30))?;
    let Reply::Flashed(name) = reply else { bail!("unexpected answer to commit: {reply:?}") };
    say!(
        "flashed {} ({} {:?}, {}); the box now runs {name}",
        package.display(),
        pkg.manifest.kind,
        pkg.manifest.precision,
        rate(bytes.len(), started, reconnects)
    );
    Ok(())
}

/// `kensa flash --firmware`: upload `binary`, let the box restart into it on trial, and
/// wait until it reports healthy (or the box has gone back to its previous firmware).
pub fn flash_firmware(port: &Path, baud: u32, binary: &Path, wait: Duration) -> Result<()> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let sig_path = crate::export::signature_path(binary);
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
    if reply != Reply::Restarting {
        bail!("unexpected answer to commit: {reply:?}");
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
        let info = Link::open(port, baud).and_then(|mut l| match l.call(RequestBody::Info)? {
            Reply::Info(i) => Ok(i),
            other => bail!("unexpected answer to info: {other:?}"),
        });
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
