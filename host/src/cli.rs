//! The command line as clap sees it: flags and their help, nothing else. Closed sets
//! are enums; [`crate::settings`] turns flags into ready values.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kensa_core::train::{DEFAULT_MAX_PATCHES, DEFAULT_SCORE_TOP_SHARE};

/// Kensa: visual inspection for production lines.
#[derive(Debug, Parser)]
#[command(name = "kensa", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// One `kensa` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import or check the pretrained CNN backbone.
    #[command(subcommand)]
    Backbone(BackboneCmd),
    /// Run the whole host pipeline on generated parts: synth → train → eval → report.
    Demo {
        /// Working folder (dataset, model, report).
        #[arg(short, long, default_value = "kensa-demo")]
        out: PathBuf,
        /// Surface finish of the generated parts.
        #[arg(long, value_enum, default_value_t = SurfaceArg::BrushedMetal)]
        surface: SurfaceArg,
    },
    /// Learn a model of good parts from a dataset.
    Train(TrainArgs),
    /// Measure a model against a labelled test set and write a report.
    Eval(EvalArgs),
    /// Judge new images: OK/NG, score and defect boxes (JSON and overlays).
    Predict(PredictArgs),
    /// Write a trained model as a model package for the box (one ONNX graph + manifest).
    Export(ExportArgs),
    /// Make an ed25519 key pair for signing packages (`<name>.key`, `<name>.pub`).
    Keygen {
        /// Path stem of the two files.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Print what a trained model rests on: data, options, threshold evidence, warnings.
    InspectModel {
        /// The model (`.kmodel`).
        model: PathBuf,
    },
    /// Print a package's manifest and verify its checksum.
    InspectPackage {
        /// The package.
        package: PathBuf,
        /// Also write its ONNX graph to this file (for other runtimes and tools).
        #[arg(long)]
        extract_onnx: Option<PathBuf>,
    },
    /// Time scoring one image at a time on one thread, stage by stage.
    Bench {
        /// The trained model (training-time pipeline, stage by stage).
        #[arg(short, long, required_unless_present = "package", conflicts_with = "package")]
        model: Option<PathBuf>,
        /// A model package instead, run by tract as the box runs it.
        #[arg(short, long)]
        package: Option<PathBuf>,
        /// With --package: threads (a tiled package's tiles side by side, else tract's
        /// kernel pool).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// With --package: also print where the time goes, by op kind (`--profile`) or
        /// node by node (`--profile=nodes`).
        #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "ops")]
        profile: Option<ProfileArg>,
        /// With --package: how an int8 package's integer products run (`auto`: the faster
        /// way on this CPU, as the box chooses).
        #[arg(long, value_enum, default_value_t = IntegerProductsArg::Auto)]
        integer_products: IntegerProductsArg,
        /// Images scored in turn (default: one generated part).
        images: Vec<PathBuf>,
        /// Images timed after the warm-up.
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// Talk to a box over its serial line: info, status, watch, settings, test fire.
    Diag {
        /// Serial device (USB adapter, e.g. /dev/ttyUSB0).
        port: PathBuf,
        /// Line rate.
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        #[command(subcommand)]
        action: DiagAction,
    },
    /// Upload a model package (or a firmware binary) to a box over its serial line and
    /// switch it over.
    Flash {
        /// Serial device.
        port: PathBuf,
        /// The package (`kensa export`).
        #[arg(required_unless_present = "firmware")]
        package: Option<PathBuf>,
        /// Flash this `kensa-fw` executable instead (its signature, if any, is read from
        /// `<binary>.sig`, see `kensa sign`). The box restarts into it on trial and goes
        /// back to its previous firmware unless the new one inspects a part in time.
        #[arg(long, conflicts_with = "package")]
        firmware: Option<PathBuf>,
        /// With `--firmware`: how long to wait for the box to come back healthy (s).
        #[arg(long, default_value_t = 180)]
        wait: u64,
        /// Line rate.
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
    },
    /// Sign a firmware binary: writes `<file>.sig` for `kensa flash --firmware`.
    Sign {
        /// The file to sign.
        file: PathBuf,
        /// Secret key (`kensa keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Rewrite a package from an older format in the current one (whole-package
    /// checksum, golden pairs scored on this PC); boxes run the current format only.
    Upgrade {
        /// The old package.
        package: PathBuf,
        /// Where to write the new one.
        #[arg(short, long)]
        out: PathBuf,
        /// Sign the new package with this secret key (`kensa keygen`); an old signature
        /// does not carry over.
        #[arg(long)]
        sign: Option<PathBuf>,
        /// Test images (MVTec layout) to measure the score range on, which bounds the
        /// threshold a box accepts.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Generate a dataset of textured parts with rectangular debris (MVTec layout).
    Synth(SynthArgs),
    /// A live table of every box reporting to an MQTT broker (Sparkplug B): online or
    /// offline, model, parts/min, NG rate, uninspected parts, alarms.
    Fleet(FleetArgs),
    /// Print the wire-protocol version this build speaks.
    Version,
}

/// `kensa fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The plant's broker: `mqtt://host[:port]` or `mqtts://host[:port]` (TLS).
    #[arg(long)]
    pub broker: String,
    /// Only this Sparkplug group (default: every group).
    #[arg(long)]
    pub group: Option<String>,
    /// One JSON object per refresh, one per line, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub refresh: f64,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long)]
    pub duration: Option<f64>,
    /// User name on the broker.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the password (its first line); never given on the command line.
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) for `mqtts://`, instead of the system's.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// `kensa backbone …`.
#[derive(Debug, Subcommand)]
pub enum BackboneCmd {
    /// Convert EfficientNet-Lite0, -Lite1 or -Lite2 PyTorch weights (.pth) into an ONNX
    /// backbone.
    Import {
        /// The state dict (legacy or zip PyTorch format, lukemelas naming).
        #[arg(long)]
        pth: PathBuf,
        /// Where to write the ONNX graph.
        #[arg(long)]
        out: PathBuf,
        /// Blocks whose outputs become feature outputs `block<i>` (default: the last
        /// block at stride 8 and the last two stages' at stride 16; 4,7,10 for Lite0).
        #[arg(long, value_delimiter = ',')]
        features: Vec<usize>,
        /// Stop after the last feature block (no classifier, no `logits` output): the
        /// smallest graph that serves anomaly models.
        #[arg(long)]
        truncate: bool,
        /// Input scaling built into the graph.
        #[arg(long, value_enum, default_value_t = ScalingArg::Symmetric)]
        scaling: ScalingArg,
    },
    /// Print the top-5 ImageNet classes a backbone with a `logits` output gives images.
    Classify {
        /// ONNX backbone with a `logits` output.
        #[arg(long)]
        model: PathBuf,
        /// Images to classify.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

/// Where the images are.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DataArgs {
    /// An MVTec-layout folder (train/good, test/<type>, ground_truth/<type>).
    #[arg(long, conflicts_with = "good")]
    pub data: Option<PathBuf>,
    /// Plain layout: folder of good images (a share is held out for testing).
    #[arg(long)]
    pub good: Option<PathBuf>,
    /// Plain layout: folders of defective images, one per defect type.
    #[arg(long, requires = "good")]
    pub defect: Vec<PathBuf>,
    /// Plain layout: folder of masks named after the defect images.
    #[arg(long, requires = "good")]
    pub masks: Option<PathBuf>,
    /// Skip unreadable images with a warning instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Learn from some defects: per defect type, 2 of every 5 images (by name) go to
    /// training and 1 to validation, and 1 of every 5 good test images to validation;
    /// the rest are the held-out test set (implied for models trained this way).
    #[arg(long)]
    pub split: bool,
}

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodArg {
    /// Nearest neighbour in a coreset memory bank.
    Patchcore,
    /// A Gaussian per patch position.
    Padim,
}

/// `--surface` of generated parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SurfaceArg {
    /// Brushed metal.
    BrushedMetal,
    /// Woven fabric.
    Fabric,
    /// Wood grain.
    Wood,
    /// Matte plastic.
    MattePlastic,
}

/// `--precision` of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 weights and compute.
    Fp32,
    /// int8 weights (DequantizeLinear), f32 compute: ~4× smaller.
    Int8Weights,
    /// int8 convolutions (ConvInteger) and PatchCore bank product (MatMulInteger), calibrated on the training images.
    Int8,
}

/// `--scaling` of an imported backbone's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScalingArg {
    /// `(x − 127) / 128`, as the Lite models were trained.
    Symmetric,
    /// ImageNet mean/std per channel: `(x/255 − μ) / σ`.
    Imagenet,
}

/// `kensa bench --integer-products`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IntegerProductsArg {
    /// Integer kernels where this CPU has integer dot products, f32 otherwise.
    Auto,
    /// tract's integer kernels.
    Integer,
    /// The same integer products as f32.
    Float,
}

/// `kensa bench --profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Time by op kind.
    Ops,
    /// Time node by node.
    Nodes,
}

/// `kensa train`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[command(args_override_self = true)]
pub struct TrainArgs {
    /// Training options from a TOML file, one key per flag (`coreset = 0.05`,
    /// `tile = 512`, `val-defect = ["a", "b"]`); flags on the command line win. The
    /// options a model was trained with are stored in it (`kensa inspect-model`) in the
    /// same form.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataArgs,
    /// Where to write the model.
    #[arg(short, long)]
    #[serde(skip)]
    pub out: PathBuf,
    /// Anomaly model.
    #[arg(long, value_enum, default_value = "patchcore")]
    pub method: MethodArg,
    /// PatchCore: share of training patches kept in the memory bank.
    #[arg(long, default_value_t = 0.01)]
    pub coreset: f64,
    /// PaDiM: random channels per Gaussian.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Model input side (px).
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// Keep colour (default: convert to grey, robust to colour casts).
    #[arg(long)]
    pub rgb: bool,
    /// Backbone ONNX (default: the shipped EfficientNet-Lite0).
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// Feature outputs of the backbone, finest first (default: block4,block10 of the
    /// shipped Lite0; for another imported backbone its finest and coarsest outputs).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Folds for out-of-sample scores: every good image is scored by a model fitted
    /// without its fold, and the threshold rests on all of them.
    #[arg(long, default_value_t = kensa_core::train::DEFAULT_FOLDS)]
    pub folds: usize,
    /// Target false-reject rate when the threshold comes from good images only.
    #[arg(long, default_value_t = 0.01)]
    pub frr: f64,
    /// Confidence with which the false-reject rate must be shown.
    #[arg(long, default_value_t = kensa_core::train::threshold::DEFAULT_CONFIDENCE)]
    pub confidence: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folders of defective validation images: with them the threshold is F1-optimal.
    #[arg(long)]
    pub val_defect: Vec<PathBuf>,
    /// Cut images into tiles of this side (source px), each scaled to the model input:
    /// for images far larger than the model input, where small defects would vanish.
    #[arg(long)]
    pub tile: Option<u32>,
    /// Overlap of neighbouring tiles (source px), with --tile.
    #[arg(long, default_value_t = 64)]
    pub tile_overlap: u32,
    /// Share of the anomaly map (highest pixels) averaged into the image score; 0 takes
    /// the single highest pixel.
    #[arg(long, default_value_t = DEFAULT_SCORE_TOP_SHARE)]
    pub score_top: f32,
    /// PatchCore: most patches gathered before the coreset (bounds memory).
    #[arg(long, default_value_t = DEFAULT_MAX_PATCHES)]
    pub max_patches: usize,
    /// Learn OK/NG from labelled defects (implies --split): a linear head on the
    /// backbone's patch features, class-weighted, early-stopped on validation images.
    #[arg(long)]
    pub supervised: bool,
    /// With --supervised: also fit the anomaly head and flag a patch when either head
    /// does (for defect kinds never seen in training).
    #[arg(long, requires = "supervised")]
    pub combined: bool,
    /// With --supervised: augmented views per defective training image.
    #[arg(long, default_value_t = 6)]
    pub ng_views: usize,
}

/// `kensa eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The trained model.
    #[arg(short, long)]
    pub model: PathBuf,
    /// Report folder (metrics.json, scores.csv, plots, overlays, index.html).
    #[arg(short, long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub operating: OperatingArgs,
}

/// Another operating point than the model's own threshold (`eval`, `predict`, `export`).
#[derive(Debug, Clone, clap::Args)]
pub struct OperatingArgs {
    /// Decide at this threshold (NG when score ≥ it) instead of the model's.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "frr")]
    pub threshold: Option<f32>,
    /// Choose the threshold again for this target false-reject rate, on the good scores
    /// the model was trained with (out of sample).
    #[arg(long)]
    pub frr: Option<f64>,
    /// With --frr: confidence with which the rate must be shown.
    #[arg(long, default_value_t = kensa_core::train::threshold::DEFAULT_CONFIDENCE, requires = "frr")]
    pub confidence: f64,
}

/// `kensa export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The trained model.
    #[arg(short, long)]
    pub model: PathBuf,
    /// The package to write (`.kpkg`).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Number format of the graph.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Test images the package is scored on before it is written (default: the
    /// dataset the model was trained on, if it is still there).
    #[command(flatten)]
    pub data: DataArgs,
    /// Largest image-AUROC loss (points) a quantised package may show against fp32.
    #[arg(long, default_value_t = 0.5)]
    pub max_auroc_drop: f64,
    /// Write the package even if it fails the accuracy check (or cannot be checked).
    #[arg(long)]
    pub accept_accuracy_drop: bool,
    /// Sign the package with this secret key (from `kensa keygen`).
    #[arg(long)]
    pub sign: Option<PathBuf>,
    #[command(flatten)]
    pub operating: OperatingArgs,
}

/// `kensa predict`.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// The trained model.
    #[arg(short, long)]
    pub model: PathBuf,
    /// Output folder (predictions.json, predictions.jsonl, overlays/).
    #[arg(short, long, default_value = "kensa-predict")]
    pub out: PathBuf,
    #[command(flatten)]
    pub operating: OperatingArgs,
    /// Images, or folders of images.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

/// `kensa synth`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Output folder (created; existing files with the same names are overwritten).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Surface finish.
    #[arg(long, value_enum, default_value_t = SurfaceArg::BrushedMetal)]
    pub surface: SurfaceArg,
    /// Image side (px); images are square.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// Good training images.
    #[arg(long, default_value_t = 60)]
    pub train: usize,
    /// Good test images.
    #[arg(long, default_value_t = 20)]
    pub test_good: usize,
    /// Defective test images (with masks).
    #[arg(long, default_value_t = 20)]
    pub test_defect: usize,
    /// Base seed; the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One diagnostics action.
#[derive(Debug, Clone, Subcommand)]
pub enum DiagAction {
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

impl Cli {
    /// Parse the command line. `kensa train --config F` reads F's options as flags put
    /// before the command line's own, so that those win.
    pub fn parse_with_config() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let cli = Self::parse_from(&args);
        let Command::Train(TrainArgs { config: Some(path), .. }) = &cli.command else { return Ok(cli) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let flags = crate::settings::config_flags(&text).with_context(|| format!("in {}", path.display()))?;
        let at = args.iter().position(|a| a == "train").expect("the train command was parsed");
        let mut full = args[..=at].to_vec();
        full.extend(flags.into_iter().map(Into::into));
        full.extend(args[at + 1..].iter().cloned());
        Self::try_parse_from(full).map_err(|e| anyhow::anyhow!("in {}: {}", path.display(), e.render()))
    }

    /// Log filter implied by `-v` flags.
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    }
}
