//! `kensa-fw`: read the configuration, build the concrete devices, run the line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Parser;
use embedded_hal::digital::OutputPin;
use kensa_fw::actuator::{LoggedSignal, PinSignal, Pusher, Signal, SimPin};
use kensa_fw::camera::{DirSource, FrameSource, Roi, Sampled, SyntheticConveyor, Triggered, V4l2Source};
use kensa_fw::clock::{Clock, MonotonicClock};
use kensa_fw::config::{Belt, Camera, Config, FailSafe, Output, Trigger};
use kensa_fw::line::{self, Summary};
use kensa_fw::link::{self, Next};
use kensa_fw::model::{Model, Swappable};
use kensa_fw::permit::{PermitMode, RunPermit};
use kensa_fw::samples::{SAMPLE_EVERY, StoreFault, sample_keeper};
use kensa_fw::schedule::{Outcome, RejectScheduler};
use kensa_fw::settings::{self, ModelSource, Overrides, Settings};
use kensa_fw::station::{Action, PartResult, Station};
use kensa_fw::store::{Holds, Store};
use kensa_fw::supervisor::{self, Supervised};
use kensa_fw::telemetry::Telemetry;
use kensa_shared::synth::{Surface, SynthSpec};
use kensa_shared::telemetry::{Birth, StatusRecord};
use kensa_shared::wire::Counters;
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
    /// Simulation: the lighting changes by this share per 1 000 parts (0.05: 5 %
    /// brighter), to see the drift alarm.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    lighting_drift: f64,
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
    /// Publish telemetry to this MQTT broker (`mqtt://host:port`, `mqtts://…`) as a
    /// Sparkplug B edge node (overrides `telemetry.broker`; needs a store for its queue).
    #[arg(long)]
    broker: Option<String>,
    /// With `--broker`: Sparkplug edge node id of this box (overrides `telemetry.node`).
    #[arg(long, requires = "broker")]
    node: Option<String>,
    /// With `--broker`: Sparkplug group id (overrides `telemetry.group`).
    #[arg(long, requires = "broker")]
    group: Option<String>,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Run the daemon as a child process with these same arguments and look after it:
    /// restart it when it exits, start flashed firmware on trial, roll back a firmware
    /// that does not report healthy. Needs a store (`--store` or `model.store`).
    #[arg(long)]
    supervise: bool,
    /// With `--supervise`: seconds a flashed firmware has to report healthy.
    #[arg(long, default_value_t = 60.0)]
    health_timeout: f64,
    /// With `--supervise`: least seconds a flashed firmware runs on trial before it is
    /// kept.
    #[arg(long, default_value_t = 30.0)]
    trial_seconds: f64,
    /// Parts a daemon scores before it reports healthy (a trial firmware is kept only
    /// after that and `--trial-seconds`).
    #[arg(long, default_value_t = 10)]
    trial_parts: u64,
    /// With `--supervise`: a kept firmware that fails 3 times within this many seconds
    /// of being kept goes back to the firmware before it.
    #[arg(long, default_value_t = 600.0)]
    crash_window: f64,
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
    Ok(kensa_shared::hex(&hasher.finalize()))
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

fn load_config(args: &Args) -> Result<Config> {
    match &args.config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(sim_config(args)),
    }
}

/// `--supervise`: look after daemons started from this executable or flashed firmware.
fn supervise(args: &Args) -> Result<ExitCode> {
    let cfg = load_config(args)?;
    let dir = settings::store_dir(&overrides(args), &cfg)
        .context("--supervise needs a store (--store or model.store) for flashed firmware")?;
    let fw_dir = supervisor::firmware_dir(&dir);
    let store = Store::open_for(&fw_dir, Holds::Firmware)
        .with_context(|| format!("firmware store {}", fw_dir.display()))?;
    let installed = std::env::current_exe().context("locating the installed kensa-fw")?;
    let child_args = std::env::args_os().skip(1).filter(|a| a != "--supervise").collect();
    let hold = match &cfg.fail_safe.run_permit {
        Some(Output::Gpio { chip, line, active_low }) => Some(Box::new(PermitHoldOff {
            chip: chip.clone(),
            line: *line,
            active_low: *active_low,
            held: None,
        }) as Box<dyn supervisor::HoldOff>),
        _ => None,
    };
    let launcher = supervisor::Processes { args: child_args, health: fw_dir.join("health"), hold };
    let timeout_us = (args.health_timeout.max(1.0) * 1e6) as u64;
    let mut sup =
        supervisor::Supervisor::new(store, installed, launcher, MonotonicClock::default(), timeout_us);
    sup.trial_min_us = (args.trial_seconds.max(0.0) * 1e6) as u64;
    sup.crash_window_us = (args.crash_window.max(0.0) * 1e6) as u64;
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
            Event::Exited { slot, exit } => format!("firmware {slot} {exit}"),
            Event::StartFailed { slot, why } => format!("cannot start firmware {slot}: {why}"),
        };
        tracing::warn!("supervisor: {line}");
        println!("kensa-fw supervisor: {line}");
    });
    Ok(ExitCode::SUCCESS)
}

/// The run-permit GPIO line, held off by the supervisor while no daemon runs.
struct PermitHoldOff {
    chip: PathBuf,
    line: u32,
    active_low: bool,
    held: Option<linux_embedded_hal::CdevPin>,
}

impl supervisor::HoldOff for PermitHoldOff {
    fn hold(&mut self) {
        if self.held.is_some() {
            return;
        }
        match gpio_output(&self.chip, self.line, "kensa-supervisor") {
            Ok(mut pin) => {
                let off = if self.active_low { pin.set_high() } else { pin.set_low() };
                if let Err(e) = off {
                    tracing::error!("supervisor: run permit would not switch off: {e:?}");
                }
                self.held = Some(pin);
            }
            Err(e) => tracing::error!("supervisor: cannot hold the run permit off: {e:#}"),
        }
    }

    fn release(&mut self) {
        self.held = None;
    }
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
    let mut counters = kensa_fw::station::Counters::default();
    loop {
        let (summary, next) = run(args, logbook.clone(), supervised.as_ref(), &firmware, counters)?;
        counters = summary.counters;
        match next {
            Next::Exit => {
                let handled = report(&summary, args.json)?;
                return Ok(if handled { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            Next::StartFlashedFirmware => return Ok(ExitCode::from(supervisor::RESTART_EXIT)),
            Next::RestartPipeline if terminate.load(Ordering::Relaxed) => {
                return Ok(ExitCode::SUCCESS);
            }
            Next::RestartPipeline => tracing::warn!("restarting the pipeline"),
        }
    }
}

/// One run of the pipeline, from the configuration to a stop; the totals carry on from
/// `counters`.
fn run(
    args: &Args,
    logbook: kensa_fw::logbook::Logbook,
    supervised: Option<&Supervised>,
    firmware: &(String, Vec<u8>),
    counters: kensa_fw::station::Counters,
) -> Result<(Summary, Next)> {
    let cfg = load_config(args)?;
    let trusted = trusted_keys(args, &cfg)?;
    let over = overrides(args);
    let dir = settings::store_dir(&over, &cfg);
    let store = match &dir {
        Some(dir) => Some(Store::open(dir).with_context(|| format!("model store {}", dir.display()))?),
        None => None,
    };
    let saved = store.as_ref().map(Store::settings).unwrap_or_default();
    let flashed = store.as_ref().map(|s| s.slots_to_try().into_iter().map(|(_, p)| p).collect());
    let run = Settings::resolve(&over, &cfg, flashed.unwrap_or_default(), &saved);
    for note in &run.ignored {
        tracing::error!("{note}");
    }
    if run.reject_saved {
        tracing::warn!("using the reject timing saved over the link: {:?}", run.timing);
    }
    let samples = store.as_ref().map(Store::samples).unwrap_or_default();
    let (model, origin) = first_model(&run.models, &trusted, &samples);
    let saved_threshold = model.as_ref().ok().and_then(|m| saved.threshold_for(&m.manifest().onnx_sha256));
    // One clock for the line: trigger edges, captures, decisions and pulses.
    let clock = MonotonicClock::default();
    let store_fault = Arc::new(StoreFault::default());
    let source = frame_source(args, &cfg, store.as_ref().map(|s| (s, &store_fault)), clock)?;
    let stop = Arc::new(AtomicBool::new(false));
    let signals = on_stop_signals(&stop)?;
    let what = match &model {
        Ok(m) => {
            let p = m.manifest();
            format!(
                "{} model {}x{}, threshold {:.3}",
                p.kind, p.preprocess.width, p.preprocess.height, p.threshold
            )
        }
        Err(why) => format!("NO MODEL, line stopped until one is flashed ({why})"),
    };
    println!("kensa-fw {}: {what}; {}", env!("CARGO_PKG_VERSION"), source.describe());
    let (swap_tx, swap_rx) = std::sync::mpsc::channel();
    let in_force = match &model {
        Ok(m) => link::InForce::of(m, origin, saved_threshold.is_some(), run.reject_saved),
        Err(why) => link::InForce::none(why),
    };
    let threshold =
        saved_threshold.or(model.as_ref().ok().map(|m| m.manifest().threshold)).unwrap_or(f32::NAN);
    let announced = Announced { sha256: in_force.sha256.clone(), threshold };
    let telemetry =
        start_telemetry(args, &cfg, dir.as_deref(), &in_force, threshold, &source.describe(), &run)?;
    let active = Arc::new(std::sync::Mutex::new(in_force));
    let telemetry = telemetry.map(|(telemetry, config)| TelemetryLink {
        telemetry,
        config,
        announced,
        model: Arc::clone(&active),
    });
    let margin_us = (cfg.fail_safe.latency_margin_ms * 1e3) as u64;
    let diagnostics =
        Diagnostics { logbook, supervised, firmware, source: source.describe(), dir: dir.as_deref() };
    let flash = FlashParts { store, trusted, swap: swap_tx, timing: run.timing, margin_us };
    let (control, port_thread, next) = match &run.serial {
        None => (None, None, Arc::new(std::sync::Mutex::new(Next::Exit))),
        Some((port, baud)) => {
            let (control, thread, next) = diagnostics.start(port.clone(), *baud, active, flash, &stop)?;
            (Some(control), Some(thread), next)
        }
    };
    let model = Swappable::new(model, swap_rx);
    let line = LineSettings {
        run: &run,
        fail_safe: &cfg.fail_safe,
        saved_threshold,
        supervised,
        trial_parts: args.trial_parts.max(1),
        counters,
        store_fault,
        telemetry,
    };
    let control = control.as_ref();
    let (limits, retry) = (run.limits, run.retry);
    let parts = line::Line { source, inspector: model, clock, limits, retry, stop: Arc::clone(&stop) };
    let summary = match &cfg.reject {
        Output::Simulated => run_line(parts, SimPin::new(clock), false, line, control),
        Output::Gpio { chip, line: l, active_low } => {
            run_line(parts, gpio_output(chip, *l, "kensa-reject")?, *active_low, line, control)
        }
    };
    // The link stops with the line (it may be what stopped it).
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = port_thread {
        let _ = t.join();
    }
    for id in signals {
        signal_hook::low_level::unregister(id);
    }
    let next = *next.lock().map_err(|_| anyhow::anyhow!("link state poisoned"))?;
    Ok((summary?, next))
}

/// The first of `models` that loads, verifies and passes its self-test on `samples`
/// (this camera's frames), with where it came from; or, when none does, why each was
/// refused. What a store holds never keeps the box from starting: with no model, the
/// line is held stopped and the link stays up for a flash.
fn first_model(
    models: &[ModelSource],
    trusted: &[kensa_shared::package::VerifyingKey],
    samples: &[image::DynamicImage],
) -> (Result<Model, String>, String) {
    let mut refused = Vec::new();
    for source in models {
        let tried = load_model(source, trusted)
            .map_err(|e| format!("{e:#}"))
            .and_then(|mut m| m.self_test(samples).map(|_| m).map_err(|e| format!("{source}: {e}")));
        match tried {
            Ok(m) => {
                if !refused.is_empty() {
                    tracing::error!("running the fallback model {source}");
                }
                let p99 = m.latency_p99_us().unwrap_or(0) as f64 / 1e3;
                tracing::warn!("model {source} loaded: {}, {p99:.1} ms per part on this box", m.describe());
                return (Ok(m), source.to_string());
            }
            Err(why) => {
                tracing::error!("model refused: {why}");
                refused.push(why);
            }
        }
    }
    (Err(refused.join("; ")), "none".into())
}

/// The flags that override the configuration, for [`Settings::resolve`].
fn overrides(args: &Args) -> Overrides {
    Overrides {
        model: args.model.clone(),
        sim: args.sim,
        parts: args.parts,
        store: args.store.clone(),
        serial: args.serial.clone(),
        baud: args.baud,
    }
}

/// `model.trusted_keys` and every `--trust` key file.
fn trusted_keys(args: &Args, cfg: &Config) -> Result<Vec<kensa_shared::package::VerifyingKey>> {
    let mut trusted = cfg.model.trusted();
    for path in &args.trust {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
        let key = kensa_shared::package::parse_public_key(&text)
            .map_err(|e| anyhow::anyhow!("key {} is not a kensa public key: {e}", path.display()))?;
        trusted.push(key);
    }
    Ok(trusted)
}

fn load_model(source: &ModelSource, trusted: &[kensa_shared::package::VerifyingKey]) -> Result<Model> {
    Ok(match source {
        ModelSource::Given(p) | ModelSource::Configured(p) => Model::load(p, trusted)?,
        ModelSource::Flashed(p) => {
            Model::load(p, trusted).with_context(|| "the flashed model in the store")?
        }
        ModelSource::Demo => Model::from_bytes(DEMO_MODEL, "built-in demo model", trusted)?,
    })
}

/// The configured camera, cut to its region, triggered when so wired, sampled into the
/// store for self-testing flashed models.
fn frame_source(
    args: &Args,
    cfg: &Config,
    store: Option<(&Store, &Arc<StoreFault>)>,
    clock: MonotonicClock,
) -> Result<Box<dyn FrameSource + Send>> {
    let source: Box<dyn FrameSource + Send> = match &cfg.camera {
        Camera::Synthetic { rate_hz, defect_rate, size, seed, lighting_drift } => Box::new(
            SyntheticConveyor::new(
                SynthSpec::square(Surface::BrushedMetal, *size),
                *rate_hz,
                *defect_rate,
                *seed,
            )
            .with_lighting_drift(*lighting_drift),
        ),
        Camera::Dir { path, rate_hz, looped, roi } => Box::new(Roi::new(
            DirSource::new(path, *rate_hz, *looped)
                .with_context(|| format!("camera folder {}", path.display()))?,
            *roi,
        )),
        Camera::V4l2 { device, pixel_format, width, height, roi } => {
            let timeout = Duration::from_secs_f64(cfg.fail_safe.camera_timeout_ms / 1e3);
            let at = match &args.config {
                Some(path) => format!("camera.device in {}", path.display()),
                None => "camera.device".into(),
            };
            let camera =
                V4l2Source::new(device.clone(), *pixel_format, *width, *height, timeout).configured_at(at);
            Box::new(Roi::new(camera, *roi))
        }
    };
    let source: Box<dyn FrameSource + Send> = match &cfg.trigger {
        Trigger::FreeRun => source,
        Trigger::Gpio { chip, line } => {
            let input = format!("GPIO line {line} on {}", chip.display());
            let edges = photo_eye(chip, *line, clock)?;
            Box::new(Triggered::new(source, edges, Duration::from_millis(200), input))
        }
    };
    // Frames for self-testing flashed models, written on their own thread.
    Ok(match store {
        Some((s, fault)) => {
            Box::new(Sampled::new(source, sample_keeper(s.dir(), fault.clone()), SAMPLE_EVERY))
        }
        None => source,
    })
}

/// What the diagnostics link reports about this daemon.
struct Diagnostics<'a> {
    logbook: kensa_fw::logbook::Logbook,
    supervised: Option<&'a Supervised>,
    /// SHA-256 of the running image and this machine's executable header.
    firmware: &'a (String, Vec<u8>),
    source: String,
    dir: Option<&'a std::path::Path>,
}

/// What flashing needs.
struct FlashParts {
    /// Where uploads go (none: flashing refused).
    store: Option<Store>,
    /// Keys uploads must be signed by.
    trusted: Vec<kensa_shared::package::VerifyingKey>,
    /// The inspector's intake of flashed models.
    swap: std::sync::mpsc::Sender<Model>,
    /// The reject timing in force.
    timing: kensa_fw::schedule::BeltTiming,
    /// `fail_safe.latency_margin_ms` (µs).
    margin_us: u64,
}

impl Diagnostics<'_> {
    /// Serve the link on `port` from its own thread until `stop`.
    fn start(
        self,
        port: PathBuf,
        baud: u32,
        active: Arc<std::sync::Mutex<link::InForce>>,
        flash: FlashParts,
        stop: &Arc<AtomicBool>,
    ) -> Result<(link::Control, std::thread::JoinHandle<()>, Arc<std::sync::Mutex<Next>>)> {
        let FlashParts { store, trusted, swap, timing, margin_us } = flash;
        let fw_dir = self.dir.map(supervisor::firmware_dir);
        let identity = link::Identity {
            model: Arc::clone(&active),
            source: self.source,
            started: std::time::Instant::now(),
            logbook: self.logbook,
            firmware_sha256: self.firmware.0.clone(),
            supervised: self.supervised.cloned().zip(fw_dir.clone()),
            trusted_keys: trusted.len(),
        };
        let firmware = match (self.supervised, &fw_dir) {
            (Some(_), Some(d)) => Some(link::FirmwareFlasher {
                store: Store::open_for(d, Holds::Firmware)
                    .with_context(|| format!("firmware store {}", d.display()))?,
                running_header: self.firmware.1.clone(),
            }),
            _ => None,
        };
        let flash = store.map(|store| {
            link::Flasher::new(store, trusted, swap, active, firmware, timing).with_latency_margin(margin_us)
        });
        let (control, end) = link::channel(identity, flash);
        let link_stop = Arc::clone(stop);
        let next = end.next();
        let thread = std::thread::spawn(move || link::run_port(port, baud, end, link_stop));
        Ok((control, thread, next))
    }
}

/// How the line runs, beyond its devices.
struct LineSettings<'a> {
    /// Timing, limits and back-off, decided.
    run: &'a Settings,
    fail_safe: &'a FailSafe,
    /// A threshold saved over the link for this model.
    saved_threshold: Option<f32>,
    /// Report healthy to the supervisor after `--trial-parts` scored parts.
    supervised: Option<&'a Supervised>,
    /// `--trial-parts`.
    trial_parts: u64,
    /// Totals so far (a pipeline restart keeps them).
    counters: kensa_fw::station::Counters,
    /// Set while the store cannot be written.
    store_fault: Arc<StoreFault>,
    /// Fleet telemetry, when configured.
    telemetry: Option<TelemetryLink>,
}

/// `[telemetry]` with the command line's overrides, if either asks for it.
fn telemetry_config(args: &Args, cfg: &Config) -> Result<Option<kensa_fw::config::Telemetry>> {
    let mut t = match (&cfg.telemetry, &args.broker) {
        (Some(t), _) => t.clone(),
        (None, Some(broker)) => kensa_fw::config::Telemetry::for_broker(broker),
        (None, None) => return Ok(None),
    };
    if let Some(b) = &args.broker {
        t.broker = b.clone();
    }
    if let Some(g) = &args.group {
        t.group = g.clone();
    }
    if let Some(n) = &args.node {
        t.node = n.clone();
    }
    if t.node.is_empty() {
        anyhow::bail!("telemetry needs an edge node id for this box: --node or telemetry.node");
    }
    Ok(Some(t))
}

/// What a box announces in its births: the model in force and its settings.
#[derive(Debug, Clone, PartialEq)]
struct Announced {
    /// `onnx_sha256` of the model in force.
    sha256: String,
    /// Threshold in force.
    threshold: f32,
}

/// The line's telemetry, and what it last announced of the model in force.
struct TelemetryLink {
    telemetry: Telemetry,
    /// Settings summary for the births.
    config: String,
    announced: Announced,
    /// The model in force (the link replaces it when a flashed one takes over).
    model: Arc<std::sync::Mutex<link::InForce>>,
}

impl TelemetryLink {
    /// Births again when the model or the threshold in force changed since the last.
    fn announce(&mut self, threshold: f32) {
        let Ok(model) = self.model.lock() else { return };
        let now = Announced { sha256: model.sha256.clone(), threshold };
        if now.sha256 != self.announced.sha256
            || now.threshold.to_bits() != self.announced.threshold.to_bits()
        {
            self.telemetry.rebirth(birth_of(&model, threshold, &self.config));
            drop(model);
            self.announced = now;
        }
    }
}

/// The birth certificate of `model` at `threshold`, with the settings summary `config`.
fn birth_of(model: &link::InForce, threshold: f32, config: &str) -> Birth {
    Birth {
        firmware_version: env!("CARGO_PKG_VERSION").into(),
        model: if model.sha256.is_empty() { model.package.origin.clone() } else { model.name.clone() },
        model_sha256: model.sha256.clone(),
        precision: model.package.precision.clone(),
        threshold,
        config: config.into(),
    }
}

/// Start the telemetry thread when configured: its queue in the store's `telemetry`
/// folder, announcing `model` at `threshold`. Returns it with the settings summary its
/// births carry.
fn start_telemetry(
    args: &Args,
    cfg: &Config,
    store: Option<&std::path::Path>,
    model: &link::InForce,
    threshold: f32,
    source: &str,
    run: &Settings,
) -> Result<Option<(Telemetry, String)>> {
    let Some(t) = telemetry_config(args, cfg)? else { return Ok(None) };
    let endpoint = kensa_fw::telemetry::Endpoint::from_config(&t)?;
    let store = store.context(
        "telemetry keeps its outage queue in the store: give the box one (--store or model.store)",
    )?;
    let timing = run.timing;
    let config = format!(
        "{source}; reject {:.0} ms after capture for {:.0} ms; uninspected parts: {:?}",
        timing.delay_us as f64 / 1e3,
        timing.width_us as f64 / 1e3,
        cfg.fail_safe.uninspected
    );
    let birth = birth_of(model, threshold, &config);
    let dir = store.join("telemetry");
    let telemetry =
        Telemetry::start(endpoint, &dir, u64::from(t.queue_mib) << 20, birth, t.thumbnails_per_minute)?;
    tracing::warn!("telemetry to {} as {}/{}, queue in {}", t.broker, t.group, t.node, dir.display());
    Ok(Some((telemetry, config)))
}

/// The built-in simulated line.
fn sim_config(args: &Args) -> Config {
    Config {
        camera: Camera::Synthetic {
            rate_hz: args.rate,
            defect_rate: args.defect_rate,
            size: 256,
            seed: args.seed,
            lighting_drift: args.lighting_drift,
        },
        model: kensa_fw::config::Model { path: "built-in".into(), trusted_keys: Vec::new(), store: None },
        trigger: Default::default(),
        belt: Belt { delay_ms: 800.0, pulse_ms: 60.0, min_gap_ms: 40.0, lead_ms: 2.0 },
        reject: Output::Simulated,
        fail_safe: FailSafe::default(),
        serial: None,
        telemetry: None,
    }
}

/// A steady output named in the config (line stop, run permit), claimed as `label`.
fn signal_output(out: &Output, clock: MonotonicClock, label: &str) -> Result<Box<dyn Signal>> {
    let signal: Box<dyn Signal> = match out {
        Output::Simulated => Box::new(LoggedSignal::new(label, clock)),
        Output::Gpio { chip, line, active_low } => Box::new(
            PinSignal::new(gpio_output(chip, *line, label)?, *active_low)
                .map_err(|e| anyhow::anyhow!("{label} output: {e:?}"))?,
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

/// The station over the reject output `pin`, then `parts` run through it.
fn run_line<P: OutputPin>(
    parts: line::Line<Box<dyn FrameSource + Send>, Swappable, MonotonicClock>,
    pin: P,
    active_low: bool,
    line: LineSettings,
    control: Option<&link::Control>,
) -> Result<Summary> {
    let clock = parts.clock;
    let pusher = Pusher::new(pin, active_low).map_err(|e| anyhow::anyhow!("reject output: {e:?}"))?;
    let threshold = kensa_fw::station::Inspector::threshold(&parts.inspector);
    let fail_safe = line.fail_safe;
    let mut station =
        Station::new(threshold, pusher, RejectScheduler::new(line.run.timing), clock, fail_safe.uninspected)
            .with_counters(line.counters)
            .with_latency_margin((fail_safe.latency_margin_ms * 1e3) as u64);
    if let Some(out) = &fail_safe.line_stop {
        station = station.with_line_stop(signal_output(out, clock, "kensa-line-stop")?);
    }
    if let Some(out) = &fail_safe.run_permit {
        let mode = match fail_safe.run_permit_heartbeat_ms {
            Some(ms) => PermitMode::Heartbeat { half_period_us: (ms * 1e3) as u64 },
            None => PermitMode::Steady,
        };
        station =
            station.with_run_permit(RunPermit::new(signal_output(out, clock, "kensa-run-permit")?, mode));
    }
    if let Some(t) = line.saved_threshold {
        tracing::warn!("using the threshold {t} saved over the link for this model");
        station.set_threshold(t);
    }
    let mut hooks = Daemon {
        control,
        supervised: line.supervised,
        healthy_after: line.trial_parts,
        scored: 0,
        clock,
        store_fault: line.store_fault.clone(),
        store_fault_seen: 0,
        telemetry: line.telemetry,
        reported: None,
    };
    let summary = parts.run(&mut station, &mut hooks);
    // The last totals, before the telemetry thread flushes and says goodbye.
    if let Some(t) = &hooks.telemetry {
        t.telemetry.status(StatusRecord { counters: summary.counters, alarms: summary.alarms.clone() });
    }
    Ok(summary)
}

/// The daemon's view of the line: every decision printed and streamed to a watching
/// host, link requests answered between parts, health reported after the first score.
struct Daemon<'a> {
    control: Option<&'a link::Control>,
    supervised: Option<&'a Supervised>,
    /// Scored parts before reporting healthy.
    healthy_after: u64,
    scored: u64,
    clock: MonotonicClock,
    store_fault: Arc<StoreFault>,
    /// The `store_fault` change last shown.
    store_fault_seen: u64,
    telemetry: Option<TelemetryLink>,
    /// The status last sent over telemetry, and when.
    reported: Option<(StatusRecord, u64)>,
}

/// Status records go at most this often while counters change, and at least this
/// often while nothing does (µs).
const STATUS_EVERY_US: u64 = 1_000_000;
const STATUS_AT_LEAST_US: u64 = 10_000_000;

impl<P: OutputPin> line::Hooks<P, MonotonicClock> for Daemon<'_> {
    fn decided(&mut self, r: &PartResult) {
        if r.score.is_some() {
            self.scored += 1;
            if self.scored == self.healthy_after {
                self.supervised.inspect(|s| s.report_healthy());
            }
        }
        if let Some(c) = self.control {
            c.publish(r);
        }
        if let Some(t) = &mut self.telemetry {
            t.telemetry.part(r);
        }
        print_part(r, &self.clock)
    }

    fn between(&mut self, station: &mut Station<P, MonotonicClock>, overruns: u64) {
        if let Some(c) = self.control {
            c.serve(station, overruns, || self.telemetry.as_ref().map(|t| t.telemetry.link_state()));
        }
        match self.store_fault.changed_since(&mut self.store_fault_seen) {
            Some(Some(why)) => station.raise(kensa_fw::station::Alarm::Store(why)),
            Some(None) => station.clear(|a| matches!(a, kensa_fw::station::Alarm::Store(_))),
            None => {}
        }
        if let Some(t) = &mut self.telemetry {
            let now = self.clock.now_us();
            let due = match &self.reported {
                None => true,
                Some((_, at)) if now < at + STATUS_EVERY_US => false,
                Some((last, at)) => {
                    now >= at + STATUS_AT_LEAST_US
                        || last.counters != Counters { overruns, ..station.counters() }
                        || last.alarms.len() != station.alarms().len()
                }
            };
            if due {
                let status = StatusRecord {
                    counters: Counters { overruns, ..station.counters() },
                    alarms: station.alarms().iter().map(ToString::to_string).collect(),
                };
                t.telemetry.status(status.clone());
                t.announce(station.threshold());
                self.reported = Some((status, now));
            }
        }
    }
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
    let fault = r.fault.as_ref().map(|f| format!("  [{f}]")).unwrap_or_default();
    println!(
        "part {:4}  {:<11} score {score}{truth:<10}  decided in {:5.1} ms  {action}{fault}  t={:.2}s",
        r.part,
        verdict,
        (r.decided_us - r.captured_us) as f64 / 1e3,
        clock.now_us() as f64 / 1e6
    );
}

/// Print the summary; `false` when a part that had to leave the belt was not pushed
/// (the run then fails: the line had to stop for it).
fn report(s: &Summary, json: bool) -> Result<bool> {
    let handled = s.unpushed == 0;
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(handled);
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
            "accuracy against the generator's truth (a defective part counts only when pushed): {}/{} ({:.1} %)",
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
    for a in &s.alarms {
        println!("ALARM: {a}");
    }
    if !handled {
        println!(
            "FAILED: {} part(s) judged NG or not inspected were not pushed off; the line stopped for them",
            s.unpushed
        );
    }
    Ok(handled)
}
