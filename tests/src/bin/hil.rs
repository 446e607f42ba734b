//! The conveyor side of the hardware-in-the-loop stage, run inside the arm64 VM next to
//! the real `kensa-fw` (see tests/vm/README.md).
//!
//! It plays the line: shows each part to a v4l2loopback camera, raises the photo-eye
//! line on a gpio-sim chip, records every edge the daemon drives on the pusher and
//! line-stop lines (read back through gpio-sim's sysfs), can unplug a vivid camera
//! (vivid's own Disconnect control, what a USB unplug does to a driver) and finally
//! judges the pusher's edges against the parts with `kensa_e2e::hil::judge`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kensa_e2e::hil::{Edge, Expect, Permit, Timing, judge, judge_permit, part, yuyv};

#[derive(Debug, Parser)]
#[command(about = "Play the conveyor for kensa-fw on real V4L2 and GPIO drivers")]
struct Args {
    /// The gpio-sim chip's sysfs folder (`/sys/devices/platform/gpio-sim.0/gpiochipN`).
    #[arg(long)]
    gpio_sysfs: PathBuf,
    /// Offset of the photo-eye (trigger) line the daemon listens on.
    #[arg(long)]
    trigger: u32,
    /// Offset of the pusher line the daemon drives.
    #[arg(long)]
    pusher: u32,
    /// Offset of the line-stop output, recorded for the report.
    #[arg(long)]
    line_stop: Option<u32>,
    /// Offset of the run-permit output.
    #[arg(long)]
    run_permit: Option<u32>,
    /// The run permit's level at each part's trigger, in order: on, off or any.
    #[arg(long, value_delimiter = ',', requires = "run_permit")]
    permit: Vec<Permit>,
    /// What each part must cause, in order: pass, push or any.
    #[arg(long, value_delimiter = ',', required = true)]
    parts: Vec<Expect>,
    /// Show generated parts to this v4l2loopback device (`kensa_e2e::hil::part`: good
    /// parts for `pass` and `any`, parts with debris for `push`), as YUYV.
    #[arg(long)]
    loopback: Option<PathBuf>,
    /// Side of the generated square parts.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Press vivid's Disconnect control on this device before the part numbered by
    /// `--unplug-before`.
    #[arg(long, requires = "unplug_before")]
    unplug: Option<PathBuf>,
    #[arg(long)]
    unplug_before: Option<usize>,
    /// Time between two triggers.
    #[arg(long, default_value_t = 8000)]
    spacing_ms: u64,
    /// The daemon's configured belt delay.
    #[arg(long)]
    delay_ms: u64,
    /// How much later than trigger + delay a pulse may start.
    #[arg(long, default_value_t = 1500)]
    slack_ms: u64,
    /// Write the run (triggers, edges, faults) here as JSON.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let now_us = move || start.elapsed().as_micros() as u64;
    let stop = Arc::new(AtomicBool::new(false));

    let showing = Arc::new(Mutex::new(Vec::new()));
    let camera = match &args.loopback {
        Some(dev) => {
            let (device, out) = open_loopback(dev, args.size)?;
            *showing.lock().unwrap() = part_image(args.size, 0, Expect::Pass);
            Some((device, spawn_frames(out, Arc::clone(&showing), Arc::clone(&stop))))
        }
        None => None,
    };
    let value = |line: u32| args.gpio_sysfs.join(format!("sim_gpio{line}/value"));
    let mut watched = vec![("pusher", value(args.pusher))];
    watched.extend(args.line_stop.map(|l| ("line-stop", value(l))));
    watched.extend(args.run_permit.map(|l| ("run-permit", value(l))));
    let recorder = spawn_recorder(watched, now_us, Arc::clone(&stop));
    let pull = args.gpio_sysfs.join(format!("sim_gpio{}/pull", args.trigger));

    // Let the daemon open the camera and see a few frames before the first part.
    std::thread::sleep(Duration::from_millis(1500));
    let mut triggers = Vec::new();
    let mut _unplugged = None;
    for (i, &want) in args.parts.iter().enumerate() {
        if args.unplug_before == Some(i) {
            let dev = args.unplug.as_deref().expect("clap requires it");
            _unplugged = Some(unplug(dev)?);
            eprintln!("hil: {} unplugged at {} ms", dev.display(), now_us() / 1000);
        }
        *showing.lock().unwrap() = part_image(args.size, i as u64 + 1, want);
        // Frames of the new part reach the driver before the photo-eye fires.
        std::thread::sleep(Duration::from_millis(400));
        triggers.push(now_us());
        write(&pull, "pull-up")?;
        std::thread::sleep(Duration::from_millis(30));
        write(&pull, "pull-down")?;
        eprintln!("hil: part {i} ({want:?}) triggered at {} ms", triggers[i] / 1000);
        std::thread::sleep(Duration::from_millis(args.spacing_ms.saturating_sub(430)));
    }
    std::thread::sleep(Duration::from_millis(args.delay_ms + args.slack_ms + 500));
    stop.store(true, Ordering::Relaxed);
    if let Some((_device, frames)) = camera {
        frames.join().expect("frame thread")?;
    }
    let lines = recorder.join().expect("recorder thread");

    let timing = Timing { delay_us: args.delay_ms * 1000, slack_us: args.slack_ms * 1000 };
    let pusher = &lines[0].1;
    let mut faults = judge(&triggers, &args.parts, pusher, timing);
    if let Some((_, permit)) = lines.iter().find(|(n, _)| *n == "run-permit") {
        faults.extend(judge_permit(&triggers, &args.permit, permit));
    }
    let record = serde_json::json!({
        "parts": args.parts, "triggers_us": triggers, "timing": timing,
        "lines": lines.iter().map(|(n, e)| (n.to_string(), e.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "faults": faults,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    for (name, edges) in &lines {
        let shown: Vec<String> = edges
            .iter()
            .map(|e| format!("{}@{}ms", if e.high { "↑" } else { "↓" }, e.at_us / 1000))
            .collect();
        eprintln!("hil: {name}: {}", shown.join(" "));
    }
    if !faults.is_empty() {
        bail!("the outputs did not follow the parts:\n  {}", faults.join("\n  "));
    }
    eprintln!("hil: {} parts, pusher and run-permit lines as expected", triggers.len());
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {}", path.display()))
}

/// The conveyor's part `index` as a YUYV frame.
fn part_image(size: u32, index: u64, want: Expect) -> Vec<u8> {
    yuyv(&part(size, index, want))
}

/// The loopback's output side, set to `size`² YUYV so the daemon's capture side sees
/// it, and a plain file to write frames through; keep the device open while writing.
fn open_loopback(dev: &Path, size: u32) -> Result<(v4l::Device, std::fs::File)> {
    use v4l::video::Output;
    let d = v4l::Device::with_path(dev).with_context(|| format!("opening {}", dev.display()))?;
    let fmt = v4l::Format::new(size, size, v4l::FourCC::new(b"YUYV"));
    let got = Output::set_format(&d, &fmt)
        .with_context(|| format!("setting the output format of {}", dev.display()))?;
    if got.width != size || got.height != size {
        bail!("{} took {}x{} instead of {size}x{size}", dev.display(), got.width, got.height);
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .with_context(|| format!("opening {} to write", dev.display()))?;
    Ok((d, out))
}

/// Write the part being shown ten times a second, like a camera's steady stream.
fn spawn_frames(
    mut out: std::fs::File,
    showing: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        use std::io::Write;
        while !stop.load(Ordering::Relaxed) {
            let frame = showing.lock().unwrap().clone();
            out.write_all(&frame).context("writing a frame to the loopback camera")?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
}

/// Poll each line's sysfs value (every millisecond) and keep its level changes.
fn spawn_recorder(
    lines: Vec<(&'static str, PathBuf)>,
    now_us: impl Fn() -> u64 + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(&'static str, Vec<Edge>)>> {
    std::thread::spawn(move || {
        let mut seen: Vec<(&'static str, Vec<Edge>)> = lines.iter().map(|(n, _)| (*n, Vec::new())).collect();
        let mut level = vec![None; lines.len()];
        while !stop.load(Ordering::Relaxed) {
            for (i, (_, path)) in lines.iter().enumerate() {
                let high = std::fs::read_to_string(path).map(|v| v.trim() == "1").unwrap_or(false);
                if level[i] != Some(high) {
                    // The first reading is the line's resting level, not an edge.
                    if level[i].is_some() || high {
                        seen[i].1.push(Edge { at_us: now_us(), high });
                    }
                    level[i] = Some(high);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    })
}

/// Press vivid's "Disconnect" button control: the driver unregisters its devices as a
/// USB camera's would when pulled out, while the daemon still holds them open. vivid
/// plugs itself back in when its last user closes; the handle returned is a user, so
/// keep it while the camera must stay gone.
fn unplug(dev: &Path) -> Result<v4l::Device> {
    let d = v4l::Device::with_path(dev).with_context(|| format!("opening {}", dev.display()))?;
    let ctrl = d
        .query_controls()
        .context("listing the camera's controls")?
        .into_iter()
        .find(|c| c.name == "Disconnect")
        .with_context(|| format!("{} has no Disconnect control (not vivid?)", dev.display()))?;
    d.set_control(v4l::control::Control { id: ctrl.id, value: v4l::control::Value::None })
        .context("pressing Disconnect")?;
    Ok(d)
}
