//! The box's configuration file (TOML): what camera, which model, how the belt is timed,
//! what to do when something fails. `kensa-fw.example.toml` documents every key.
//!
//! Parsing never guesses: an unknown key, a wrong type or a value out of range is one
//! error naming the key (`belt.pulse_ms`) and the problem, and the box does not start.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::schedule::BeltTiming;

/// Everything the daemon reads at start-up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where frames come from.
    pub camera: Camera,
    /// The model package to inspect with.
    pub model: Model,
    /// What starts an inspection.
    #[serde(default)]
    pub trigger: Trigger,
    /// Belt and pusher timing.
    pub belt: Belt,
    /// The reject output.
    #[serde(default)]
    pub reject: Output,
    /// What happens to parts that could not be inspected.
    #[serde(default)]
    pub fail_safe: FailSafe,
    /// Diagnostics link.
    #[serde(default)]
    pub serial: Option<Serial>,
    /// Fleet telemetry to an MQTT broker (Sparkplug B); none when absent.
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
}

/// `[telemetry]`: where the box reports, as which Sparkplug node, with what secrets.
/// Secrets are read from files named here, never written into this file, and never
/// printed (`Debug` names the files only).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub broker: String,
    /// Sparkplug group id (a plant or hall).
    pub group: String,
    /// Sparkplug edge node id: this box, unique on the broker.
    pub node: String,
    /// Broker user name.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates to trust for `mqtts://` (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that authenticate clients by certificate.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Most disk the outage queue may take (MiB); the oldest records go first, counted.
    #[serde(default = "default_queue_mib")]
    pub queue_mib: u32,
    /// NG thumbnails per minute at most (0: none).
    #[serde(default = "default_thumbnails")]
    pub thumbnails_per_minute: u32,
}

impl Telemetry {
    /// Settings for `broker` with every optional one at its default, as `--broker`
    /// without a `[telemetry]` table gives.
    pub fn for_broker(broker: &str) -> Self {
        Self {
            broker: broker.into(),
            group: "kensa".into(),
            node: String::new(),
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            queue_mib: default_queue_mib(),
            thumbnails_per_minute: default_thumbnails(),
        }
    }
}

fn default_queue_mib() -> u32 {
    64
}

fn default_thumbnails() -> u32 {
    6
}

/// Frame source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Camera {
    /// A V4L2 device.
    V4l2 {
        /// Device node, e.g. `/dev/video0`.
        device: PathBuf,
        /// `MJPG` or `YUYV`.
        pixel_format: PixelFormat,
        /// Frame width (px).
        width: u32,
        /// Frame height (px).
        height: u32,
        /// Region of interest `[x, y, w, h]` cut from each frame before inspection.
        #[serde(default)]
        roi: Option<[u32; 4]>,
    },
    /// Images from a folder, in name order.
    Dir {
        /// The folder.
        path: PathBuf,
        /// Frames per second.
        rate_hz: f64,
        /// Start again at the first image after the last.
        #[serde(default, rename = "loop")]
        looped: bool,
        /// Region of interest `[x, y, w, h]`.
        #[serde(default)]
        roi: Option<[u32; 4]>,
    },
    /// Generated parts on a simulated conveyor (the `kensa synth` generator).
    Synthetic {
        /// Frames per second.
        rate_hz: f64,
        /// Share of parts carrying debris (0–1).
        defect_rate: f64,
        /// Frame side (px).
        #[serde(default = "default_synthetic_size")]
        size: u32,
        /// Seed of the part sequence.
        #[serde(default)]
        seed: u64,
        /// Lighting change per 1 000 parts (0.05: 5 % brighter), to try the drift alarm.
        #[serde(default)]
        lighting_drift: f64,
    },
}

fn default_synthetic_size() -> u32 {
    256
}

/// Camera pixel formats the box decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PixelFormat {
    /// Motion JPEG.
    #[serde(rename = "MJPG")]
    Mjpg,
    /// YUV 4:2:2, packed Y0 U Y1 V.
    #[serde(rename = "YUYV")]
    Yuyv,
}

/// Model settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Model package file.
    pub path: PathBuf,
    /// ed25519 public keys (hex, from `kensa keygen`) whose signed packages are
    /// accepted. Empty: any intact package is accepted.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Folder for packages flashed over the diagnostics link (A/B slots); when it holds
    /// an active package, that one runs instead of `path`. No folder: flashing refused.
    #[serde(default)]
    pub store: Option<PathBuf>,
}

impl Model {
    /// The trusted keys, parsed (validated when the config was loaded).
    pub fn trusted(&self) -> Vec<kensa_shared::package::VerifyingKey> {
        self.trusted_keys.iter().filter_map(|k| kensa_shared::package::parse_public_key(k).ok()).collect()
    }
}

/// What starts an inspection.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Trigger {
    /// Every frame is a part.
    #[default]
    FreeRun,
    /// A rising edge on a GPIO input (photo-eye) starts an inspection.
    Gpio {
        /// GPIO character device, e.g. `/dev/gpiochip0`.
        chip: PathBuf,
        /// Line offset on the chip.
        line: u32,
    },
}

/// Belt and pusher timing (ms in the file, µs inside).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Belt {
    /// Capture → part in front of the pusher.
    pub delay_ms: f64,
    /// Pusher pulse width.
    pub pulse_ms: f64,
    /// Least time between two pulses (the cylinder must retract).
    #[serde(default)]
    pub min_gap_ms: f64,
    /// Least notice the output needs before a pulse.
    #[serde(default = "default_lead_ms")]
    pub lead_ms: f64,
}

fn default_lead_ms() -> f64 {
    2.0
}

/// A digital output.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Output {
    /// No hardware: edges are recorded with their times (and logged).
    #[default]
    Simulated,
    /// A GPIO line through the Linux character device.
    Gpio {
        /// GPIO character device.
        chip: PathBuf,
        /// Line offset on the chip.
        line: u32,
        /// The output is active-low (pusher out when the line is low).
        #[serde(default)]
        active_low: bool,
    },
}

/// Fail-safe policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailSafe {
    /// What happens to a part that could not be inspected (no frame, model error,
    /// corrupt frame, decision too late).
    pub uninspected: Uninspected,
    /// Raised while the line is stopped (a lamp or relay); the run permit is the
    /// output that is safe when the box is dead.
    #[serde(default)]
    pub line_stop: Option<Output>,
    /// The run permit (line-OK): on only while no alarm holds the line, off while the
    /// box is stopped, starting, without a model or camera, or has stopped the line.
    /// Wire the belt's enable through it (with a pull-down, so a dead box means off).
    #[serde(default)]
    pub run_permit: Option<Output>,
    /// Toggle the run permit every this many ms while it is on, for a watchdog relay
    /// that drops the belt when a hung box stops toggling. Unset: a steady level.
    #[serde(default)]
    pub run_permit_heartbeat_ms: Option<f64>,
    /// How much longer than the model's measured p99 latency the belt delay must be
    /// (ms): capture and decode come on top of inference, and a busy box varies.
    #[serde(default = "default_latency_margin_ms")]
    pub latency_margin_ms: f64,
    /// Camera frame timeout before the camera counts as lost (ms).
    pub camera_timeout_ms: f64,
    /// First retry delay after losing the camera; doubles up to `camera_retry_max_ms`.
    pub camera_retry_ms: f64,
    /// Longest retry delay (ms).
    pub camera_retry_max_ms: f64,
}

impl Default for FailSafe {
    fn default() -> Self {
        Self {
            uninspected: Uninspected::Reject,
            line_stop: None,
            run_permit: None,
            run_permit_heartbeat_ms: None,
            latency_margin_ms: default_latency_margin_ms(),
            camera_timeout_ms: 1000.0,
            camera_retry_ms: 200.0,
            camera_retry_max_ms: 5000.0,
        }
    }
}

fn default_latency_margin_ms() -> f64 {
    50.0
}

/// Policy for parts that could not be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Uninspected {
    /// Push them off like NG parts.
    Reject,
    /// Raise the line-stop output until the fault clears.
    StopLine,
}

/// Diagnostics serial port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    /// Device, e.g. `/dev/ttyS0`.
    pub port: PathBuf,
    /// Line rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    115_200
}

/// A configuration problem: the file, the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong type (toml names the key and line).
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value out of range.
    #[error("config {path}: `{key}` {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Config {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parse and check TOML `text` (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        cfg.validate().map_err(|(key, problem)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = |key: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err((key, format!("must be a positive number, not {v}")))
            }
        };
        let non_negative = |key: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err((key, format!("must be zero or more, not {v}")))
            }
        };
        for k in &self.model.trusted_keys {
            kensa_shared::package::parse_public_key(k)
                .map_err(|e| ("model.trusted_keys", format!("{k:?}: {e}")))?;
        }
        match &self.camera {
            Camera::V4l2 { width, height, roi, .. } => {
                if *width == 0 || *height == 0 {
                    return Err(("camera.width", format!("frame size {width}x{height} is empty")));
                }
                check_roi(*roi, Some((*width, *height)))?;
            }
            Camera::Dir { rate_hz, roi, .. } => {
                positive("camera.rate_hz", *rate_hz)?;
                check_roi(*roi, None)?;
            }
            Camera::Synthetic { rate_hz, defect_rate, size, .. } => {
                positive("camera.rate_hz", *rate_hz)?;
                if !(0.0..=1.0).contains(defect_rate) {
                    return Err((
                        "camera.defect_rate",
                        format!("must be between 0 and 1, not {defect_rate}"),
                    ));
                }
                if !(32..=8192).contains(size) {
                    return Err(("camera.size", format!("must be 32..=8192 px, not {size}")));
                }
            }
        }
        let b = &self.belt;
        positive("belt.delay_ms", b.delay_ms)?;
        positive("belt.pulse_ms", b.pulse_ms)?;
        non_negative("belt.min_gap_ms", b.min_gap_ms)?;
        non_negative("belt.lead_ms", b.lead_ms)?;
        if b.lead_ms >= b.delay_ms {
            return Err((
                "belt.lead_ms",
                format!("({} ms) must be shorter than belt.delay_ms ({} ms)", b.lead_ms, b.delay_ms),
            ));
        }
        let f = &self.fail_safe;
        positive("fail_safe.camera_timeout_ms", f.camera_timeout_ms)?;
        positive("fail_safe.camera_retry_ms", f.camera_retry_ms)?;
        if f.camera_retry_max_ms < f.camera_retry_ms {
            return Err((
                "fail_safe.camera_retry_max_ms",
                "must not be below fail_safe.camera_retry_ms".into(),
            ));
        }
        if f.uninspected == Uninspected::StopLine && f.line_stop.is_none() && f.run_permit.is_none() {
            return Err((
                "fail_safe.line_stop",
                "(or fail_safe.run_permit) is required when fail_safe.uninspected = \"stop-line\"".into(),
            ));
        }
        non_negative("fail_safe.latency_margin_ms", f.latency_margin_ms)?;
        if let Some(h) = f.run_permit_heartbeat_ms {
            positive("fail_safe.run_permit_heartbeat_ms", h)?;
        }
        Ok(())
    }
}

fn check_roi(roi: Option<[u32; 4]>, frame: Option<(u32, u32)>) -> Result<(), (&'static str, String)> {
    let Some([x, y, w, h]) = roi else { return Ok(()) };
    if w == 0 || h == 0 {
        return Err(("camera.roi", format!("[{x}, {y}, {w}, {h}] is empty")));
    }
    if let Some((fw, fh)) = frame
        && (x as u64 + w as u64 > fw as u64 || y as u64 + h as u64 > fh as u64)
    {
        return Err(("camera.roi", format!("[{x}, {y}, {w}, {h}] reaches outside the {fw}x{fh} frame")));
    }
    Ok(())
}

impl Belt {
    /// The scheduler's view, µs.
    pub fn timing(&self) -> BeltTiming {
        let us = |ms: f64| (ms * 1000.0).round() as u64;
        BeltTiming {
            delay_us: us(self.delay_ms),
            width_us: us(self.pulse_ms),
            min_gap_us: us(self.min_gap_ms),
            lead_us: us(self.lead_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../kensa-fw.example.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("box.toml"))
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert!(matches!(c.camera, Camera::V4l2 { pixel_format: PixelFormat::Mjpg, width: 1280, .. }));
        assert_eq!(
            c.belt.timing(),
            BeltTiming { delay_us: 800_000, width_us: 60_000, min_gap_us: 40_000, lead_us: 2_000 }
        );
        assert_eq!(c.fail_safe.uninspected, Uninspected::Reject);
        assert!(matches!(c.reject, Output::Gpio { line: 17, .. }));
        assert_eq!(c.model.store.as_deref(), Some(std::path::Path::new("/var/lib/kensa/store")));
    }

    #[test]
    fn minimal_simulation_config_takes_defaults() {
        let c = parse(
            "[camera]\nsource = \"synthetic\"\nrate_hz = 4\ndefect_rate = 0.2\n\
             [model]\npath = \"m.kpkg\"\n[belt]\ndelay_ms = 500\npulse_ms = 50\n",
        )
        .unwrap();
        assert_eq!(c.trigger, Trigger::FreeRun);
        assert_eq!(c.reject, Output::Simulated);
        assert_eq!(c.fail_safe, FailSafe::default());
        assert!(matches!(c.camera, Camera::Synthetic { size: 256, .. }));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let base =
            "[camera]\nsource = \"synthetic\"\nrate_hz = 4\ndefect_rate = 0.2\n[model]\npath = \"m\"\n";
        let err =
            parse(&format!("{base}[belt]\ndelay_ms = 500\npulse_ms = 50\npulse_width = 3\n")).unwrap_err();
        assert!(err.to_string().contains("pulse_width"), "{err}");
        let err = parse(&format!("{base}[belt]\ndelay_ms = 500\npulse_ms = -1\n")).unwrap_err();
        assert!(err.to_string().contains("`belt.pulse_ms` must be a positive number"), "{err}");
        let err = parse(&format!("{base}[belt]\ndelay_ms = 5\npulse_ms = 5\nlead_ms = 9\n")).unwrap_err();
        assert!(err.to_string().contains("`belt.lead_ms`"), "{err}");
        let err =
            parse(&format!("{base}[belt]\ndelay_ms = 5\npulse_ms = 5\n[fail_safe]\nuninspected = \"stop-line\"\ncamera_timeout_ms = 1\ncamera_retry_ms = 1\ncamera_retry_max_ms = 2\n"))
                .unwrap_err();
        assert!(err.to_string().contains("fail_safe.line_stop"), "{err}");
        let err = parse("[camera]\nsource = \"v4l2\"\ndevice = \"/dev/video0\"\npixel_format = \"MJPG\"\nwidth = 640\nheight = 480\nroi = [600, 0, 100, 100]\n[model]\npath = \"m\"\n[belt]\ndelay_ms = 5\npulse_ms = 5\n").unwrap_err();
        assert!(err.to_string().contains("camera.roi") && err.to_string().contains("outside"), "{err}");
        let err = parse(&format!("{base}[belt]\ndelay_ms = \"soon\"\npulse_ms = 5\n")).unwrap_err();
        assert!(err.to_string().contains("delay_ms"), "{err}");
        let keyed = base.replace("path = \"m\"\n", "path = \"m\"\ntrusted_keys = [\"c0ffee\"]\n");
        let err = parse(&format!("{keyed}[belt]\ndelay_ms = 5\npulse_ms = 5\n")).unwrap_err();
        assert!(
            err.to_string().contains("model.trusted_keys") && err.to_string().contains("64 hex"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load(Path::new("/nonexistent/kensa.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kensa.toml"), "{err}");
    }
}
