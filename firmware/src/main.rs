//! `kensa-fw`: read the configuration, build the concrete devices, run the line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::Parser;
use embedded_hal::digital::OutputPin;
use kensa_fw::actuator::{PinSignal, Pusher, Signal, SimPin};
use kensa_fw::camera::{DirSource, FrameSource, Roi, Sampled, SyntheticConveyor, Triggered, V4l2Source};
use kensa_fw::clock::{Clock, MonotonicClock};
use kensa_fw::config::{Belt, Camera, Config, FailSafe, Output, Trigger};
use kensa_fw::line::{self, Retry, RunLimits, Summary};
use kensa_fw::link::{self, Next};
use kensa_fw::model::{Model, Swappable};
use kensa_fw::schedule::{Outcome, RejectScheduler};
use kensa_fw::station::{Action, PartResult, Station};
use kensa_fw::store::{Holds, Store};
use kensa_fw::supervisor::{self, Supervised};
use kensa_shared::synth::{Surface, SynthSpec};
use std::time::Duration;

/// The model the simulation runs when none is given: PatchCore trained on generated
/// brushed-metal parts (see models/NOTICE.md for how it was made).
const DEMO_MODEL: &[u8] = include_bytes!("../../models/demo_brushed_metal.kpkg");

/// Kensa edge daemon: camera → model → OK/NG → timed reject pulse.
#[derive(Debug, Parser)]
#[command(name = "kensa-fw", version, about)]
struct Args {
    /// Configuration file (see kensa-fw.example.toml).
    #[arg(short, long, required_unless_present = "sim", conflicts_with = "sim")]
    config: Option<PathBuf>,
    /// Simulated line, no hardware: generated parts, simulated pusher, the shipped demo model.
    #[arg(long)]
    sim: bool,
    /// Model package (overrides the configuration's).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Stop after this many parts (the simulation defaults to 40).
    #[arg(long)]
    parts: Option<u64>,
    /// Simulation: parts per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Simulation: share of parts with debris.
    #[arg(long, default_value_t = 0.25)]
    defect_rate: f64,
    /// Simulation: seed of the part sequence.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the final summary as JSON.
    #[arg(long)]
    json: bool,
    /// Accept only model packages and firmware signed by this public key (a `kensa keygen`
    /// `.pub` file; repeatable, adds to the configuration's `model.trusted_keys`).
    #[arg(long)]
    trust: Vec<PathBuf>,
    /// Model store for flashing (overrides the configuration's `model.store`).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Serve diagnostics on this serial device (overrides the configuration's port).
    #[arg(long)]
    serial: Option<PathBuf>,
    /// Line rate of `--serial`.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Run the daemon as a child process with these same arguments and look after it:
    /// restart it when it exits, start flashed firmware on trial, roll back a firmware
    /// that does not report healthy. Needs a store (`--store` or `model.store`).
    #[arg(long)]
    supervise: bool,
    /// With `--supervise`: seconds a flashed firmware has to score its first part.
    #[arg(long, default_value_t = 60.0)]
    health_timeout: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = ["warn", "info", "debug"][args.verbose.min(2) as usize];
    let logbook = kensa_fw::logbook::Logbook::default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(logbook.clone())
        .init();
    let outcome = if args.supervise { supervise(&args) } else { daemon(&args, &logbook) };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Set `flag` on SIGTERM and SIGINT; the ids unregister it.
fn on_stop_signals(flag: &Arc<AtomicBool>) -> Result<Vec<signal_hook::SigId>> {
    [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT]
        .into_iter()
        .map(|sig| signal_hook::flag::register(sig, Arc::clone(flag)).context("installing signal handlers"))
        .collect()
}

/// SHA-256 (hex) of a file, streamed: an executable need not fit in memory twice.
fn file_sha256(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut f, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The first `n` bytes of a file (fewer if it is shorter).
fn file_head(path: &std::path::Path, n: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(n).read_to_end(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(head)
}

/// The store folder named on the command line or in the configuration.
fn store_dir(args: &Args, cfg: &Config) -> Option<PathBuf> {
    args.store.clone().or_else(|| cfg.model.store.clone())
}

fn load_config(args: &Args) -> Result<Config> {
    match &args.config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(sim_config(args)),
    }
}

/// `--supervise`: look after daemons started from this executable or flashed firmware.
fn supervise(args: &Args) -> Result<ExitCode> {
    let cfg = load_config(args)?;
    let dir = store_dir(args, &cfg)
        .context("--supervise needs a store (--store or model.store) for flashed firmware")?;
    let fw_dir = supervisor::firmware_dir(&dir);
    let store = Store::open_for(&fw_dir, Holds::Firmware)
        .with_context(|| format!("firmware store {}", fw_dir.display()))?;
    let installed = std::env::current_exe().context("locating the installed kensa-fw")?;
    let child_args = std::env::args_os().skip(1).filter(|a| a != "--supervise").collect();
    let launcher = supervisor::Processes { args: child_args, health: fw_dir.join("health") };
    let timeout_us = (args.health_timeout.max(1.0) * 1e6) as u64;
    let mut sup =
        supervisor::Supervisor::new(store, installed, launcher, MonotonicClock::default(), timeout_us);
    let stop = Arc::new(AtomicBool::new(false));
    on_stop_signals(&stop)?;
    sup.run(&stop, |event| {
        use supervisor::Event;
        let line = match event {
            Event::Started(f) => {
                format!("started firmware {}{}", f.slot, if f.trial { " on trial" } else { "" })
            }
            Event::Promoted(slot) => {
                format!("firmware {slot} reported healthy: it is now the active firmware")
            }
            Event::RolledBack { slot, why } => {
                format!("firmware {slot} {why}: rolled back to the previous firmware")
            }
            Event::Exited { slot, code } => format!("firmware {slot} exited ({code:?})"),
            Event::StartFailed { slot, why } => format!("cannot start firmware {slot}: {why}"),
        };
        tracing::warn!("supervisor: {line}");
        println!("kensa-fw supervisor: {line}");
    });
    Ok(ExitCode::SUCCESS)
}

/// The daemon: run the line, rebuilding it when the link asks, until stopped.
fn daemon(args: &Args, logbook: &kensa_fw::logbook::Logbook) -> Result<ExitCode> {
    let supervised = Supervised::from_env();
    if supervised.is_some() {
        // The supervisor holds our stdin: its end means the supervisor is gone.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
        });
    }
    let terminate = Arc::new(AtomicBool::new(false));
    on_stop_signals(&terminate)?;
    // What the supervisor started (the running executable when unsupervised, or when it
    // started a launcher that exec'd it), and this machine's executable header.
    let exe = std::env::current_exe().context("locating the running executable")?;
    let image = supervised.as_ref().and_then(|s| s.image.clone()).unwrap_or_else(|| exe.clone());
    let firmware = (file_sha256(&image)?, file_head(&exe, 64)?);
    loop {
        let (summary, next) = run(args, logbook.clone(), supervised.as_ref(), &firmware)?;
        match next {
            Next::Exit => {
                report(&summary, args.json)?;
                return Ok(ExitCode::SUCCESS);
            }
            Next::StartFlashedFirmware => return Ok(ExitCode::from(supervisor::RESTART_EXIT)),
            Next::RestartPipeline if terminate.load(std::sync::atomic::Ordering::Relaxed) => {
                return Ok(ExitCode::SUCCESS);
            }
            Next::RestartPipeline => tracing::warn!("restarting the pipeline"),
        }
    }
}

/// One run of the pipeline, from the configuration to a stop.
fn run(
    args: &Args,
    logbook: kensa_fw::logbook::Logbook,
    supervised: Option<&Supervised>,
    (firmware_sha256, running_header): &(String, Vec<u8>),
) -> Result<(Summary, Next)> {
    let cfg = load_config(args)?;
    let mut trusted = cfg.model.trusted();
    for path in &args.trust {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
        let key = kensa_shared::package::parse_public_key(&text)
            .map_err(|e| anyhow::anyhow!("key {} is not a kensa public key: {e}", path.display()))?;
        trusted.push(key);
    }
    let dir = store_dir(args, &cfg);
    let store = match &dir {
        Some(dir) => Some(Store::open(dir).with_context(|| format!("model store {}", dir.display()))?),
        None => None,
    };
    let flashed = store.as_ref().and_then(Store::active).filter(|_| args.model.is_none());
    let model = match (&args.model, &flashed, args.sim) {
        (Some(p), _, _) => Model::load(p, &trusted)?,
        (None, Some(p), _) => Model::load(p, &trusted).with_context(|| "the flashed model in the store")?,
        (None, None, true) => Model::from_bytes(DEMO_MODEL, "built-in demo model", &trusted)?,
        (None, None, false) => Model::load(&cfg.model.path, &trusted)?,
    };
    let settings = store.as_ref().map(Store::settings).unwrap_or_default();
    let saved_threshold = settings.threshold_for(&model.manifest().onnx_sha256);
    let mut timing = cfg.belt.timing();
    let reject_saved = match settings.reject.map(|r| timing.with_reject(r.delay_ms, r.pulse_ms)) {
        Some(Ok(t)) => {
            tracing::warn!("using the reject timing saved over the link: {t:?}");
            timing = t;
            true
        }
        Some(Err(e)) => {
            tracing::error!("ignoring the saved reject timing: {e}");
            false
        }
        None => false,
    };
    // One clock for the line: trigger edges, captures, decisions and pulses.
    let clock = MonotonicClock::default();
    let source: Box<dyn FrameSource + Send> = match &cfg.camera {
        Camera::Synthetic { rate_hz, defect_rate, size, seed } => Box::new(SyntheticConveyor::new(
            SynthSpec::square(Surface::BrushedMetal, *size),
            *rate_hz,
            *defect_rate,
            *seed,
        )),
        Camera::Dir { path, rate_hz, looped, roi } => Box::new(Roi::new(
            DirSource::new(path, *rate_hz, *looped)
                .with_context(|| format!("camera folder {}", path.display()))?,
            *roi,
        )),
        Camera::V4l2 { device, pixel_format, width, height, roi } => {
            let timeout = Duration::from_secs_f64(cfg.fail_safe.camera_timeout_ms / 1e3);
            Box::new(Roi::new(V4l2Source::new(device.clone(), *pixel_format, *width, *height, timeout), *roi))
        }
    };
    let source: Box<dyn FrameSource + Send> = match &cfg.trigger {
        Trigger::FreeRun => source,
        Trigger::Gpio { chip, line } => {
            let input = format!("GPIO line {line} on {}", chip.display());
            Box::new(Triggered::new(
                source,
                photo_eye(chip, *line, clock)?,
                Duration::from_millis(200),
                input,
            ))
        }
    };
    // Frames for self-testing flashed models, written on their own thread.
    let source: Box<dyn FrameSource + Send> = match &store {
        Some(s) => Box::new(Sampled::new(source, sample_keeper(s.dir()), SAMPLE_EVERY)),
        None => source,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = on_stop_signals(&stop)?;
    let limits = RunLimits { parts: args.parts.or(args.sim.then_some(40)) };
    let m = model.manifest();
    println!(
        "kensa-fw {}: {} model {}x{}, threshold {:.3}; {}",
        env!("CARGO_PKG_VERSION"),
        m.kind,
        m.preprocess.width,
        m.preprocess.height,
        m.threshold,
        source.describe()
    );
    let serial = match (&args.serial, &cfg.serial) {
        (Some(port), _) => Some((port.clone(), args.baud)),
        (None, Some(s)) => Some((s.port.clone(), s.baud)),
        (None, None) => None,
    };
    let (swap_tx, swap_rx) = std::sync::mpsc::channel();
    let active =
        Arc::new(std::sync::Mutex::new(link::InForce::of(&model, saved_threshold.is_some(), reject_saved)));
    let fw_dir = dir.as_deref().map(supervisor::firmware_dir);
    let (control, port_thread, next) = match serial {
        None => (None, None, Arc::new(std::sync::Mutex::new(Next::Exit))),
        Some((port, baud)) => {
            let identity = link::Identity {
                model: Arc::clone(&active),
                source: source.describe(),
                started: std::time::Instant::now(),
                logbook,
                firmware_sha256: firmware_sha256.clone(),
                supervised: supervised.cloned().zip(fw_dir.clone()),
            };
            let firmware = match (supervised, &fw_dir) {
                (Some(_), Some(d)) => Some(link::FirmwareFlasher {
                    store: Store::open_for(d, Holds::Firmware)
                        .with_context(|| format!("firmware store {}", d.display()))?,
                    running_header: running_header.clone(),
                }),
                _ => None,
            };
            let flash =
                store.map(|store| link::Flasher::new(store, trusted, swap_tx, active, firmware, timing));
            let (control, end) = link::channel(identity, flash);
            let link_stop = Arc::clone(&stop);
            let next = end.next();
            let thread = std::thread::spawn(move || link::run_port(port, baud, end, link_stop));
            (Some(control), Some(thread), next)
        }
    };
    let model = Swappable::new(model, swap_rx);
    let control = control.as_ref();
    let line = Line { timing, fail_safe: &cfg.fail_safe, limits, saved_threshold, supervised };
    let summary = match &cfg.reject {
        Output::Simulated => {
            run_line(source, model, SimPin::new(clock), false, clock, &line, Arc::clone(&stop), control)
        }
        Output::Gpio { chip, line: l, active_low } => {
            let pin = gpio_output(chip, *l, "kensa-reject")?;
            run_line(source, model, pin, *active_low, clock, &line, Arc::clone(&stop), control)
        }
    };
    // The link stops with the line (it may be what stopped it).
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = port_thread {
        let _ = t.join();
    }
    for id in signals {
        signal_hook::low_level::unregister(id);
    }
    let next = *next.lock().map_err(|_| anyhow::anyhow!("link state poisoned"))?;
    Ok((summary?, next))
}

/// How the line runs, beyond its devices.
struct Line<'a> {
    /// Reject timing (the configuration's, or one saved over the link).
    timing: kensa_fw::schedule::BeltTiming,
    fail_safe: &'a FailSafe,
    limits: RunLimits,
    /// A threshold saved over the link for this model.
    saved_threshold: Option<f32>,
    /// Report healthy to the supervisor after the first scored part.
    supervised: Option<&'a Supervised>,
}

/// Keep a camera sample every this many frames (and the first of each run).
const SAMPLE_EVERY: u64 = 1000;

/// A thread writing camera samples into the store at `dir`; ends with the sender.
fn sample_keeper(dir: &std::path::Path) -> std::sync::mpsc::SyncSender<image::DynamicImage> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<image::DynamicImage>(1);
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let Ok(store) = Store::open(&dir) else { return };
        let start = store.next_sample_index();
        for (i, frame) in rx.into_iter().enumerate() {
            if let Err(e) = store.save_sample(start + i, &frame) {
                tracing::warn!("keeping a camera sample: {e}");
            }
        }
    });
    tx
}

/// The built-in simulated line.
fn sim_config(args: &Args) -> Config {
    Config {
        camera: Camera::Synthetic {
            rate_hz: args.rate,
            defect_rate: args.defect_rate,
            size: 256,
            seed: args.seed,
        },
        model: kensa_fw::config::Model { path: "built-in".into(), trusted_keys: Vec::new(), store: None },
        trigger: Default::default(),
        belt: Belt { delay_ms: 800.0, pulse_ms: 60.0, min_gap_ms: 40.0, lead_ms: 2.0 },
        reject: Output::Simulated,
        fail_safe: FailSafe::default(),
        serial: None,
    }
}

/// The line-stop relay named in the config.
fn line_stop_output(out: &Output, clock: MonotonicClock) -> Result<Box<dyn Signal>> {
    let signal: Box<dyn Signal> = match out {
        Output::Simulated => {
            Box::new(PinSignal::new(SimPin::new(clock), false).expect("a simulated pin cannot fail"))
        }
        Output::Gpio { chip, line, active_low } => Box::new(
            PinSignal::new(gpio_output(chip, *line, "kensa-line-stop")?, *active_low)
                .map_err(|e| anyhow::anyhow!("line-stop output: {e:?}"))?,
        ),
    };
    Ok(signal)
}

/// Rising edges of a GPIO input (the photo-eye), each stamped on `clock` as it wakes the
/// thread blocked on the kernel's line events. The kernel's own event stamp is not used:
/// its clock (realtime or monotonic) depends on the kernel version.
fn photo_eye(
    chip: &std::path::Path,
    line: u32,
    clock: MonotonicClock,
) -> Result<std::sync::mpsc::Receiver<u64>> {
    use linux_embedded_hal::gpio_cdev::{Chip, EventRequestFlags, LineRequestFlags};
    let mut c = Chip::new(chip).with_context(|| format!("opening GPIO chip {}", chip.display()))?;
    let events = c
        .get_line(line)
        .and_then(|l| l.events(LineRequestFlags::INPUT, EventRequestFlags::RISING_EDGE, "kensa-trigger"))
        .with_context(|| format!("claiming GPIO line {line} on {} as the trigger input", chip.display()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in events {
            if let Err(e) = event {
                tracing::error!("trigger input failed: {e}");
                break;
            }
            if tx.send(clock.now_us()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// A GPIO output line through the Linux character device.
fn gpio_output(chip: &std::path::Path, line: u32, label: &str) -> Result<linux_embedded_hal::CdevPin> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let mut c = Chip::new(chip).with_context(|| format!("opening GPIO chip {}", chip.display()))?;
    let handle = c
        .get_line(line)
        .and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, label))
        .with_context(|| format!("claiming GPIO line {line} on {}", chip.display()))?;
    linux_embedded_hal::CdevPin::new(handle)
        .with_context(|| format!("GPIO line {line} on {}", chip.display()))
}

#[allow(clippy::too_many_arguments)]
fn run_line<P: OutputPin>(
    source: Box<dyn FrameSource + Send>,
    model: Swappable,
    pin: P,
    active_low: bool,
    clock: MonotonicClock,
    line: &Line,
    stop: Arc<AtomicBool>,
    control: Option<&link::Control>,
) -> Result<Summary> {
    let pusher = Pusher::new(pin, active_low).map_err(|e| anyhow::anyhow!("reject output: {e:?}"))?;
    let threshold = kensa_fw::station::Inspector::threshold(&model);
    let fail_safe = line.fail_safe;
    let mut station =
        Station::new(threshold, pusher, RejectScheduler::new(line.timing), clock, fail_safe.uninspected);
    if let Some(out) = &fail_safe.line_stop {
        station = station.with_line_stop(line_stop_output(out, clock)?);
    }
    if let Some(t) = line.saved_threshold {
        tracing::warn!("using the threshold {t} saved over the link for this model");
        station.set_threshold(t);
    }
    let retry = Retry { first_ms: fail_safe.camera_retry_ms, max_ms: fail_safe.camera_retry_max_ms };
    let mut healthy = line.supervised.is_none();
    Ok(line::run(source, model, &mut station, clock, line.limits, retry, stop, control, |r| {
        if !healthy && r.score.is_some() {
            healthy = true;
            line.supervised.inspect(|s| s.report_healthy());
        }
        print_part(r, &clock)
    }))
}

fn print_part(r: &PartResult, clock: &MonotonicClock) {
    let verdict = r.verdict;
    let score = r.score.map_or("    -".into(), |s| format!("{s:7.3}"));
    let truth = match r.truth {
        Some(true) => "  (debris)",
        Some(false) => "  (good)",
        None => "",
    };
    let action = match r.action {
        Action::Pass => "pass".to_string(),
        Action::Reject(Outcome::Scheduled { at_us }) => {
            format!("reject at +{:.0} ms", at_us.saturating_sub(r.captured_us) as f64 / 1e3)
        }
        Action::Reject(Outcome::Merged { .. }) => "reject (shares a stroke)".to_string(),
        Action::Reject(Outcome::Late { .. }) => "reject LATE".to_string(),
        Action::StopLine => "LINE STOP".to_string(),
    };
    let fault = r.fault.as_deref().map(|f| format!("  [{f}]")).unwrap_or_default();
    println!(
        "part {:4}  {:<11} score {score}{truth:<10}  decided in {:5.1} ms  {action}{fault}  t={:.2}s",
        r.part,
        verdict,
        (r.decided_us - r.captured_us) as f64 / 1e3,
        clock.now_us() as f64 / 1e6
    );
}

fn report(s: &Summary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let c = s.counters;
    println!(
        "\n{} parts in {:.1} s: {} OK, {} NG, {} uninspected ({} overruns); {} reject pulses fired ({} parts \
         shared a neighbour's stroke), {} late (line stops {})",
        c.parts,
        s.seconds,
        c.ok,
        c.ng,
        c.uninspected,
        s.overruns,
        s.pulses_fired,
        c.merged,
        c.late,
        c.line_stops
    );
    if s.with_truth > 0 {
        println!(
            "accuracy against the generator's truth: {}/{} ({:.1} %)",
            s.correct,
            s.with_truth,
            100.0 * s.correct as f64 / s.with_truth as f64
        );
    }
    println!("capture -> decision latency: p50 {:.1} ms, p99 {:.1} ms", s.latency_p50_ms, s.latency_p99_ms);
    let st = &s.stages;
    println!(
        "stages p50 (p99): capture {:.1} ({:.1}) ms, preprocess + inference {:.1} ({:.1}) ms, queue {:.2} ({:.2}) ms, \
         decision {:.3} ({:.3}) ms",
        st.capture.p50_ms,
        st.capture.p99_ms,
        st.inspect.p50_ms,
        st.inspect.p99_ms,
        st.queue.p50_ms,
        st.queue.p99_ms,
        st.decide.p50_ms,
        st.decide.p99_ms
    );
    Ok(())
}
