//! `kensa diag`: what a box sees and does, over its serial line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kensa_shared::verdict::Verdict;
use kensa_shared::wire::{Event, Inspection, Reply, RequestBody};

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
    /// Change the decision threshold from the next part on.
    Set {
        /// New threshold (NG when score ≥ threshold; supervised scores can be negative).
        #[arg(long, allow_negative_numbers = true)]
        threshold: f32,
    },
    /// Fire the reject output once (wiring check).
    TestReject,
    /// Clear a raised line-stop output.
    ClearLineStop,
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
            say!("firmware  kensa-fw {} (protocol {})", i.firmware_version, i.protocol);
            say!("model     {}", i.model.as_deref().unwrap_or("none"));
            say!("source    {}", i.source);
            say!("threshold {:.4}", i.threshold);
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
        Action::Set { threshold } => {
            expect_done(link.call(RequestBody::SetThreshold(*threshold))?)?;
            say!("threshold set to {threshold}");
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

/// `kensa flash`: upload `package` to the box on `port` and switch it over. Resumes from
/// the box's staged bytes, after a lost link within this run or a previous run.
pub fn flash(port: &Path, baud: u32, package: &Path) -> Result<()> {
    use kensa_shared::wire::FLASH_CHUNK;
    let bytes = std::fs::read(package).with_context(|| format!("reading {}", package.display()))?;
    let pkg = kensa_shared::package::Package::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a model package: {e}", package.display()))?;
    let sha256 = kensa_shared::sha256_hex(&bytes);
    let size = bytes.len() as u64;
    let pb = crate::train::progress(bytes.len(), "flashing");
    let started = std::time::Instant::now();
    let mut reconnects = 0;
    let name = loop {
        let attempt = (|| -> Result<String> {
            let mut link = Link::open(port, baud)?;
            let Reply::FlashOffset(mut at) =
                link.call(RequestBody::FlashBegin { size, sha256: sha256.clone() })?
            else {
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
            // Verifying, loading and self-testing the model takes the box a while.
            match link.call_within(RequestBody::FlashCommit, Duration::from_secs(30))? {
                Reply::Flashed(name) => Ok(name),
                other => bail!("unexpected answer to commit: {other:?}"),
            }
        })();
        match attempt {
            Ok(name) => break name,
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
    let secs = started.elapsed().as_secs_f64();
    say!(
        "flashed {} ({} {:?}, {} bytes in {:.1} s, {:.0} B/s{}); the box now runs {name}",
        package.display(),
        pkg.manifest.kind,
        pkg.manifest.precision,
        size,
        secs,
        size as f64 / secs,
        if reconnects > 0 { format!(", {reconnects} reconnects") } else { String::new() }
    );
    Ok(())
}
