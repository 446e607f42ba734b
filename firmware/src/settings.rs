//! What one run of the daemon uses, decided from its flags, its configuration and what
//! its store holds before any device is opened. Pure, so each precedence rule is tested.

use std::path::PathBuf;

use crate::config::Config;
use crate::line::{Retry, RunLimits};
use crate::schedule::BeltTiming;
use crate::store::Settings as Saved;

/// Parts the simulation runs when not told otherwise.
pub const SIM_PARTS: u64 = 40;

/// The command-line flags that override the configuration.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--model`.
    pub model: Option<PathBuf>,
    /// `--sim`.
    pub sim: bool,
    /// `--parts`.
    pub parts: Option<u64>,
    /// `--store`.
    pub store: Option<PathBuf>,
    /// `--serial`, at `baud`.
    pub serial: Option<PathBuf>,
    /// `--baud`.
    pub baud: u32,
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `--model`: always wins, so a technician can try a package by hand.
    Given(PathBuf),
    /// The store's active slot: what was last flashed.
    Flashed(PathBuf),
    /// `--sim` with nothing flashed: the shipped demo model.
    Demo,
    /// `model.path` of the configuration.
    Configured(PathBuf),
}

impl std::fmt::Display for ModelSource {
    /// Where the model came from, for `info`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given(p) => write!(f, "--model {}", p.display()),
            Self::Flashed(p) => write!(
                f,
                "{}",
                p.file_name().map_or(p.display().to_string(), |n| n.to_string_lossy().into_owned())
            ),
            Self::Demo => write!(f, "built-in demo model"),
            Self::Configured(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A run's settings, decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The models to try, best first: the first that loads and passes its self-test
    /// runs; with none, the box runs with the line stopped until one is flashed.
    pub models: Vec<ModelSource>,
    /// Serial diagnostics: device and line rate.
    pub serial: Option<(PathBuf, u32)>,
    /// When to stop by itself.
    pub limits: RunLimits,
    /// Reject timing in force: the configuration's, or the one saved over the link.
    pub timing: BeltTiming,
    /// Whether `timing` is the saved one.
    pub reject_saved: bool,
    /// Camera-loss back-off.
    pub retry: Retry,
    /// Why a saved setting was not used (logged, never fatal: the configuration holds).
    pub ignored: Vec<String>,
}

/// The store folder: `--store`, else `model.store`.
pub fn store_dir(over: &Overrides, cfg: &Config) -> Option<PathBuf> {
    over.store.clone().or_else(|| cfg.model.store.clone())
}

impl Settings {
    /// Decide from the flags, the configuration, the store's uploads (`flashed`, best
    /// first) and the settings saved over the link.
    pub fn resolve(over: &Overrides, cfg: &Config, flashed: Vec<PathBuf>, saved: &Saved) -> Self {
        let mut models: Vec<ModelSource> = over.model.iter().cloned().map(ModelSource::Given).collect();
        models.extend(flashed.into_iter().map(ModelSource::Flashed));
        models.push(if over.sim {
            ModelSource::Demo
        } else {
            ModelSource::Configured(cfg.model.path.clone())
        });
        let serial = match (&over.serial, &cfg.serial) {
            (Some(port), _) => Some((port.clone(), over.baud)),
            (None, Some(s)) => Some((s.port.clone(), s.baud)),
            (None, None) => None,
        };
        let mut ignored = Vec::new();
        let configured = cfg.belt.timing();
        let (timing, reject_saved) =
            match saved.reject.map(|r| configured.with_reject(r.delay_ms, r.pulse_ms)) {
                Some(Ok(t)) => (t, true),
                Some(Err(e)) => {
                    ignored.push(format!("ignoring the saved reject timing: {e}"));
                    (configured, false)
                }
                None => (configured, false),
            };
        let f = &cfg.fail_safe;
        Self {
            models,
            serial,
            limits: RunLimits { parts: over.parts.or(over.sim.then_some(SIM_PARTS)) },
            timing,
            reject_saved,
            retry: Retry { first_ms: f.camera_retry_ms, max_ms: f.camera_retry_max_ms },
            ignored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SavedReject;

    fn config() -> Config {
        let text = r#"
            [camera]
            source = "dir"
            path = "/srv/frames"
            rate_hz = 5.0
            [model]
            path = "/etc/kensa/model.kpkg"
            [belt]
            delay_ms = 800
            pulse_ms = 60
            [serial]
            port = "/dev/ttyGS0"
            baud = 57600
        "#;
        Config::parse(text, std::path::Path::new("test.toml")).unwrap()
    }

    fn resolve(over: &Overrides, flashed: Option<&str>, saved: &Saved) -> Settings {
        Settings::resolve(over, &config(), flashed.into_iter().map(PathBuf::from).collect(), saved)
    }

    #[test]
    fn a_given_model_beats_the_flashed_one_which_beats_the_configured_one() {
        let none = Saved::default();
        let given = Overrides { model: Some("try.kpkg".into()), ..Default::default() };
        assert_eq!(
            resolve(&given, Some("slot-a.kpkg"), &none).models[0],
            ModelSource::Given("try.kpkg".into())
        );
        let plain = Overrides::default();
        assert_eq!(
            resolve(&plain, Some("slot-a.kpkg"), &none).models[0],
            ModelSource::Flashed("slot-a.kpkg".into())
        );
        assert_eq!(
            resolve(&plain, None, &none).models,
            [ModelSource::Configured("/etc/kensa/model.kpkg".into())]
        );
        let sim = Overrides { sim: true, ..Default::default() };
        assert_eq!(resolve(&sim, None, &none).models, [ModelSource::Demo]);
        assert_eq!(
            resolve(&sim, Some("slot-b.kpkg"), &none).models[0],
            ModelSource::Flashed("slot-b.kpkg".into())
        );
    }

    #[test]
    fn a_model_that_does_not_load_falls_back_to_the_other_slot_then_the_installed_one() {
        let flashed = vec![PathBuf::from("slot-b.kpkg"), PathBuf::from("slot-a.kpkg")];
        let s = Settings::resolve(&Overrides::default(), &config(), flashed, &Saved::default());
        assert_eq!(
            s.models,
            [
                ModelSource::Flashed("slot-b.kpkg".into()),
                ModelSource::Flashed("slot-a.kpkg".into()),
                ModelSource::Configured("/etc/kensa/model.kpkg".into()),
            ]
        );
    }

    #[test]
    fn the_simulation_stops_by_itself_and_a_box_does_not() {
        let none = Saved::default();
        assert_eq!(
            resolve(&Overrides { sim: true, ..Default::default() }, None, &none).limits.parts,
            Some(SIM_PARTS)
        );
        assert_eq!(resolve(&Overrides::default(), None, &none).limits.parts, None);
        let ten = Overrides { sim: true, parts: Some(10), ..Default::default() };
        assert_eq!(resolve(&ten, None, &none).limits.parts, Some(10));
    }

    #[test]
    fn a_serial_flag_overrides_the_configured_port() {
        let none = Saved::default();
        assert_eq!(resolve(&Overrides::default(), None, &none).serial, Some(("/dev/ttyGS0".into(), 57600)));
        let flag = Overrides { serial: Some("/dev/ttyUSB1".into()), baud: 9600, ..Default::default() };
        assert_eq!(resolve(&flag, None, &none).serial, Some(("/dev/ttyUSB1".into(), 9600)));
    }

    #[test]
    fn a_saved_reject_timing_is_used_unless_the_belt_cannot_take_it() {
        let saved =
            Saved { reject: Some(SavedReject { delay_ms: 650.0, pulse_ms: 30.0 }), ..Default::default() };
        let s = resolve(&Overrides::default(), None, &saved);
        assert!(s.reject_saved);
        assert_eq!((s.timing.delay_us, s.timing.width_us), (650_000, 30_000));
        assert!(s.ignored.is_empty());
        let broken =
            Saved { reject: Some(SavedReject { delay_ms: 600.0, pulse_ms: -1.0 }), ..Default::default() };
        let s = resolve(&Overrides::default(), None, &broken);
        assert!(!s.reject_saved);
        assert_eq!(s.timing, config().belt.timing(), "the configuration holds");
        assert!(s.ignored[0].contains("pulse width"), "{:?}", s.ignored);
    }
}
