//! Command-line surface: clap structs (flags only) and dispatch to the command modules.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kensa_shared::preprocess::Colour;
use kensa_shared::synth::{Surface, SynthSpec};

use kensa_shared::tiling::Tiling;

use crate::{
    backbone, bench, dataset, diag, draw, eval, export, model, predict, report, supervised, synth, train,
};

/// Kensa: visual inspection for production lines.
#[derive(Debug, Parser)]
#[command(name = "kensa", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import or check the pretrained CNN backbone.
    #[command(subcommand)]
    Backbone(BackboneCmd),
    /// Run the whole host pipeline on generated parts: synth → train → eval → report.
    Demo {
        /// Working folder (dataset, model, report).
        #[arg(short, long, default_value = "kensa-demo")]
        out: PathBuf,
        /// Surface finish of the generated parts.
        #[arg(long, default_value = "brushed-metal")]
        surface: String,
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
        /// With --package: tract threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// With --package: also print where the time goes, by op kind (`--profile`) or
        /// node by node (`--profile=nodes`).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "ops", value_parser = ["ops", "nodes"])]
        profile: Option<String>,
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
        action: diag::Action,
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
    /// Generate a dataset of textured parts with rectangular debris (MVTec layout).
    Synth(SynthArgs),
    /// Print the wire-protocol version this build speaks.
    Version,
}

#[derive(Debug, Subcommand)]
enum BackboneCmd {
    /// Convert EfficientNet-Lite0 PyTorch weights (.pth) into an ONNX backbone.
    Import {
        /// The state dict (legacy or zip PyTorch format, lukemelas naming).
        #[arg(long)]
        pth: PathBuf,
        /// Where to write the ONNX graph.
        #[arg(long)]
        out: PathBuf,
        /// Blocks whose outputs become feature outputs `block<i>` (0..=15).
        #[arg(long, value_delimiter = ',', default_values_t = backbone::DEFAULT_FEATURE_BLOCKS)]
        features: Vec<usize>,
        /// Stop after the last feature block (no classifier, no `logits` output): the
        /// smallest graph that serves anomaly models.
        #[arg(long)]
        truncate: bool,
        /// Input scaling built into the graph.
        #[arg(long, value_enum, default_value_t = backbone::InputScaling::Symmetric)]
        scaling: backbone::InputScaling,
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
#[derive(Debug, clap::Args)]
struct DataArgs {
    /// An MVTec-layout folder (train/good, test/<type>, ground_truth/<type>).
    #[arg(long, conflicts_with = "good")]
    data: Option<PathBuf>,
    /// Plain layout: folder of good images (a share is held out for testing).
    #[arg(long)]
    good: Option<PathBuf>,
    /// Plain layout: folders of defective images, one per defect type.
    #[arg(long, requires = "good")]
    defect: Vec<PathBuf>,
    /// Plain layout: folder of masks named after the defect images.
    #[arg(long, requires = "good")]
    masks: Option<PathBuf>,
    /// Skip unreadable images with a warning instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Learn from some defects: per defect type, 2 of every 5 images (by name) go to
    /// training and 1 to validation, and 1 of every 5 good test images to validation;
    /// the rest are the held-out test set (implied for models trained this way).
    #[arg(long)]
    split: bool,
}

impl DataArgs {
    fn given(&self) -> bool {
        self.data.is_some() || self.good.is_some()
    }

    fn load(&self) -> Result<(dataset::Dataset, String)> {
        match (&self.data, &self.good) {
            (Some(root), _) => Ok((dataset::Dataset::mvtec(root)?, root.display().to_string())),
            (None, Some(good)) => Ok((
                dataset::Dataset::folders(good, &self.defect, self.masks.as_deref(), 0.2)?,
                good.display().to_string(),
            )),
            (None, None) => bail!("say where the images are: --data <mvtec folder> or --good <folder>"),
        }
        .map(|(mut ds, name)| {
            if self.split {
                ds.split_labelled();
            }
            (ds, name)
        })
    }

    fn on_error(&self) -> dataset::OnError {
        if self.skip_bad { dataset::OnError::Skip } else { dataset::OnError::Fail }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Patchcore,
    Padim,
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Where to write the model.
    #[arg(short, long)]
    out: PathBuf,
    /// Anomaly model.
    #[arg(long, value_enum, default_value = "patchcore")]
    method: MethodArg,
    /// PatchCore: share of training patches kept in the memory bank.
    #[arg(long, default_value_t = 0.01)]
    coreset: f64,
    /// PaDiM: random channels per Gaussian.
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Model input side (px).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Keep colour (default: convert to grey, robust to colour casts).
    #[arg(long)]
    rgb: bool,
    /// Backbone ONNX (default: the shipped EfficientNet-Lite0).
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Feature outputs of the backbone, finest first.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Share of good training images held out to set the threshold.
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// Target false-reject rate when the threshold comes from good images only.
    #[arg(long, default_value_t = 0.01)]
    frr: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folders of defective validation images: with them the threshold is F1-optimal.
    #[arg(long)]
    val_defect: Vec<PathBuf>,
    /// Cut images into tiles of this side (source px), each scaled to the model input:
    /// for images far larger than the model input, where small defects would vanish.
    #[arg(long)]
    tile: Option<u32>,
    /// Overlap of neighbouring tiles (source px).
    #[arg(long, default_value_t = 64, requires = "tile")]
    tile_overlap: u32,
    /// Share of the anomaly map (highest pixels) averaged into the image score; 0 takes
    /// the single highest pixel.
    #[arg(long, default_value_t = train::DEFAULT_SCORE_TOP_SHARE)]
    score_top: f32,
    /// PatchCore: most patches gathered before the coreset (bounds memory).
    #[arg(long, default_value_t = train::DEFAULT_MAX_PATCHES)]
    max_patches: usize,
    /// Learn OK/NG from labelled defects (implies --split): a linear head on the
    /// backbone's patch features, class-weighted, early-stopped on validation images.
    #[arg(long)]
    supervised: bool,
    /// With --supervised: also fit the anomaly head and flag a patch when either head
    /// does (for defect kinds never seen in training).
    #[arg(long, requires = "supervised")]
    combined: bool,
    /// With --supervised: augmented views per defective training image.
    #[arg(long, default_value_t = 6, requires = "supervised")]
    ng_views: usize,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The trained model.
    #[arg(short, long)]
    model: PathBuf,
    /// Report folder (metrics.json, scores.csv, plots, overlays, index.html).
    #[arg(short, long)]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// The trained model.
    #[arg(short, long)]
    model: PathBuf,
    /// The package to write (`.kpkg`).
    #[arg(short, long)]
    out: PathBuf,
    /// Number format of the graph.
    #[arg(long, value_enum, default_value_t = export::PrecisionArg::Fp32)]
    precision: export::PrecisionArg,
    /// Test images the package is scored on before it is written (default: the
    /// dataset the model was trained on, if it is still there).
    #[command(flatten)]
    data: DataArgs,
    /// Largest image-AUROC loss (points) a quantised package may show against fp32.
    #[arg(long, default_value_t = 0.5)]
    max_auroc_drop: f64,
    /// Write the package even if it fails the accuracy check (or cannot be checked).
    #[arg(long)]
    accept_accuracy_drop: bool,
    /// Sign the package with this secret key (from `kensa keygen`).
    #[arg(long)]
    sign: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PredictArgs {
    /// The trained model.
    #[arg(short, long)]
    model: PathBuf,
    /// Output folder (predictions.json, overlays/).
    #[arg(short, long, default_value = "kensa-predict")]
    out: PathBuf,
    /// Skip unreadable images with a warning instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Images, or folders of images.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SynthArgs {
    /// Output folder (created; existing files with the same names are overwritten).
    #[arg(short, long)]
    out: PathBuf,
    /// Surface finish: brushed-metal, fabric, wood or matte-plastic.
    #[arg(long, default_value = "brushed-metal")]
    surface: String,
    /// Image side (px); images are square.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Good training images.
    #[arg(long, default_value_t = 60)]
    train: usize,
    /// Good test images.
    #[arg(long, default_value_t = 20)]
    test_good: usize,
    /// Defective test images (with masks).
    #[arg(long, default_value_t = 20)]
    test_defect: usize,
    /// Base seed; the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl Cli {
    /// Log filter implied by `-v` flags.
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    }

    /// Run the chosen command.
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Backbone(BackboneCmd::Import { pth, out, features, truncate, scaling }) => {
                backbone::cmd_import(&pth, &out, &features, !truncate, scaling)
            }
            Command::Backbone(BackboneCmd::Classify { model, images }) => {
                backbone::cmd_classify(&model, &images)
            }
            Command::Demo { out, surface } => demo(&out, &surface),
            Command::Diag { port, baud, action } => diag::run(&port, baud, &action),
            Command::Flash { port, package: Some(package), baud, .. } => diag::flash(&port, baud, &package),
            Command::Flash { port, firmware: Some(binary), baud, wait, .. } => {
                diag::flash_firmware(&port, baud, &binary, Duration::from_secs(wait))
            }
            Command::Flash { .. } => bail!("give a model package or --firmware <binary>"),
            Command::Sign { file, key } => {
                let out = export::sign_file(&file, &key)?;
                say!("wrote {}", out.display());
                Ok(())
            }
            Command::Train(a) => {
                let (ds, name) = a.data.load()?;
                let mut opts = train::TrainOptions {
                    method: match a.method {
                        MethodArg::Patchcore => train::Method::PatchCore { coreset: a.coreset },
                        MethodArg::Padim => train::Method::Padim { channels: a.channels },
                    },
                    size: a.size,
                    colour: if a.rgb { Colour::Rgb } else { Colour::Gray },
                    holdout: a.holdout,
                    frr: a.frr,
                    seed: a.seed,
                    on_error: a.data.on_error(),
                    tiling: a.tile.map(|tile| Tiling { tile, overlap: a.tile_overlap }),
                    max_patches: a.max_patches,
                    score_top_share: a.score_top,
                    ..Default::default()
                };
                if let Some(b) = &a.backbone {
                    opts.backbone =
                        std::fs::read(b).with_context(|| format!("reading backbone {}", b.display()))?;
                }
                if !a.features.is_empty() {
                    opts.features = a.features.clone();
                }
                let mut val = Vec::new();
                for dir in &a.val_defect {
                    let kind = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    for path in dataset::list_images(dir)? {
                        val.push(dataset::Item {
                            path,
                            label: dataset::Label::Defect(kind.clone()),
                            mask: None,
                        });
                    }
                }
                let m = if a.supervised {
                    let mut ds = ds;
                    ds.split_labelled();
                    let opts = supervised::SupervisedOptions {
                        base: opts,
                        ng_views: a.ng_views,
                        combined: a.combined,
                        ..Default::default()
                    };
                    supervised::train_supervised(&ds, &name, &opts)?
                } else {
                    train::train(&ds, &val, &name, &opts)?
                };
                m.save(&a.out)?;
                say!(
                    "trained {} on {} good + {} defective images in {:.1} s; threshold {:.4} ({}); wrote {}",
                    m.head.name(),
                    m.training.images,
                    m.training.defect_images,
                    m.training.seconds,
                    m.threshold.value,
                    m.threshold.rule,
                    a.out.display()
                );
                if let model::Head::Combined(c) = &m.head {
                    say!(
                        "combined: patch score = {:.1} × anomaly + {:.1} × classifier, each standardised on good \
                         validation images (weight chosen by validation AUROC)",
                        c.anomaly_weight,
                        1.0 - c.anomaly_weight
                    );
                }
                if !m.training.curves.is_empty() {
                    let png = a.out.with_extension("curves.png");
                    draw::curves(&m.training.curves)
                        .save(&png)
                        .with_context(|| format!("writing {}", png.display()))?;
                    let last = m.training.curves.last().expect("not empty");
                    say!(
                        "{} epochs; last: train loss {:.3} acc {:.3}, validation loss {:.3} acc {:.3}; curves: {}",
                        m.training.curves.len(),
                        last.train_loss,
                        last.train_accuracy,
                        last.val_loss,
                        last.val_accuracy,
                        png.display()
                    );
                }
                Ok(())
            }
            Command::Eval(a) => {
                let (mut ds, _) = a.data.load()?;
                let scorer = model::Scorer::new(model::TrainedModel::load(&a.model)?)?;
                if scorer.model.training.labelled_split && !a.data.split {
                    ds.split_labelled();
                    say!(
                        "the model learnt from part of the defects: scoring the held-out test images of its split"
                    );
                }
                let started = std::time::Instant::now();
                let (m, cases) = eval::evaluate(&scorer, &ds, a.data.on_error())?;
                let fmt = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
                say!(
                    "image AUROC {}  pixel AUROC {}  AUPRO@0.3 {}  F1-max {}  ({} images, {:.1} s)",
                    fmt(m.image_auroc),
                    fmt(m.pixel_auroc),
                    fmt(m.aupro),
                    fmt(m.image_f1_max),
                    cases.len(),
                    started.elapsed().as_secs_f64()
                );
                let c = m.confusion;
                say!(
                    "at threshold {:.4} ({}): {} NG caught, {} escaped, {} good passed, {} false alarms (F1 {:.3})",
                    m.threshold,
                    m.threshold_rule,
                    c.true_ng,
                    c.false_ok,
                    c.true_ok,
                    c.false_ng,
                    m.image_f1
                );
                if let Some(dir) = &a.report {
                    report::write(dir, &scorer.model, &m, &cases)?;
                    say!("report: {}", dir.join("index.html").display());
                }
                Ok(())
            }
            Command::Predict(a) => {
                let files = predict::collect_inputs(&a.inputs)?;
                let scorer = model::Scorer::new(model::TrainedModel::load(&a.model)?)?;
                let on_error = if a.skip_bad { dataset::OnError::Skip } else { dataset::OnError::Fail };
                let preds = predict::run(&scorer, &files, &a.out, on_error, |p| {
                    let boxes: Vec<String> = p
                        .defects
                        .iter()
                        .take(3)
                        .map(|b| format!("[{},{}..{},{}]", b.x0, b.y0, b.x1, b.y1))
                        .collect();
                    say!(
                        "{}: {} score {:.3} (threshold {:.3}){}{}",
                        p.file.display(),
                        p.decision,
                        p.score,
                        p.threshold,
                        if p.defects.is_empty() {
                            String::new()
                        } else {
                            format!(", {} defects ", p.defects.len())
                        },
                        boxes.join(" ")
                    );
                    Ok(())
                })?;
                let ng = preds.iter().filter(|p| p.decision != "OK").count();
                say!(
                    "{} images: {} OK, {} not OK; wrote {}",
                    preds.len(),
                    preds.len() - ng,
                    ng,
                    a.out.join("predictions.json").display()
                );
                Ok(())
            }
            Command::Export(a) => {
                let m = model::TrainedModel::load(&a.model)?;
                let data = if a.data.given() {
                    let (mut ds, name) = a.data.load()?;
                    if m.training.labelled_split {
                        ds.split_labelled();
                    }
                    Some((ds, name))
                } else {
                    export::training_data(&m).map(|ds| (ds, m.training.dataset.clone()))
                };
                let opts = export::ExportOptions {
                    precision: a.precision,
                    max_auroc_drop: a.max_auroc_drop,
                    accept_accuracy_drop: a.accept_accuracy_drop,
                    sign: a.sign.clone(),
                    on_error: a.data.on_error(),
                };
                let pkg = export::run(&m, data.as_ref().map(|(ds, name)| (ds, name.as_str())), &opts)?;
                let bytes = pkg.to_bytes();
                std::fs::write(&a.out, &bytes).with_context(|| format!("writing {}", a.out.display()))?;
                say!(
                    "wrote {} ({:.2} MiB, {} {:?}, threshold {:.4}, graph sha256 {}{})",
                    a.out.display(),
                    bytes.len() as f64 / (1 << 20) as f64,
                    pkg.manifest.kind,
                    pkg.manifest.precision,
                    pkg.manifest.threshold,
                    pkg.manifest.onnx_sha256,
                    if pkg.signature.is_some() { ", signed" } else { "" }
                );
                Ok(())
            }
            Command::Keygen { out } => {
                let (secret, public) = export::keygen(&out)?;
                say!(
                    "wrote secret key {} (keep it private) and public key {}",
                    secret.display(),
                    public.display()
                );
                Ok(())
            }
            Command::InspectPackage { package, extract_onnx } => {
                let bytes = std::fs::read(&package)
                    .with_context(|| format!("reading package {}", package.display()))?;
                let pkg = kensa_shared::package::Package::from_bytes(&bytes)
                    .with_context(|| format!("package {}", package.display()))?;
                let m = &pkg.manifest;
                say!("{}: {} bytes, checksum OK", package.display(), bytes.len());
                say!("kind        {} ({:?})", m.kind, m.precision);
                say!(
                    "input       {}x{} {:?} {:?}",
                    m.preprocess.width,
                    m.preprocess.height,
                    m.preprocess.colour,
                    m.preprocess.resize
                );
                say!("tiling      {:?}", m.tiling);
                say!("threshold   {:.4} ({})", m.threshold, m.threshold_rule);
                say!("score       {}", m.score);
                say!("training    {}", m.training);
                say!("graph       {} bytes, sha256 {}", pkg.onnx.len(), m.onnx_sha256);
                match &pkg.signature {
                    Some(s) => say!(
                        "signature   ed25519, valid, by {}",
                        kensa_shared::package::key_hex(&s.public_key)
                    ),
                    None => say!("signature   none"),
                }
                say!("created     {} (unix)", m.created_unix);
                for (k, v) in &m.metrics {
                    say!("metric      {k} = {v:.4}");
                }
                if let Some(path) = extract_onnx {
                    std::fs::write(&path, &pkg.onnx)
                        .with_context(|| format!("writing {}", path.display()))?;
                    say!("wrote graph to {}", path.display());
                }
                Ok(())
            }
            Command::Bench { model, package, threads, profile, images, runs } => {
                let imgs = if images.is_empty() {
                    let spec = SynthSpec::square(Surface::BrushedMetal, 256);
                    vec![image::DynamicImage::ImageLuma8(kensa_shared::synth::generate(&spec, 1, true).image)]
                } else {
                    predict::collect_inputs(&images)?
                        .iter()
                        .map(|p| dataset::open_image(p))
                        .collect::<Result<Vec<_>>>()?
                };
                if let Some(path) = package {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading package {}", path.display()))?;
                    let runner = kensa_shared::runtime::Runner::from_bytes(&bytes, threads)
                        .with_context(|| format!("package {}", path.display()))?;
                    say!(
                        "package {}, {} image(s), {runs} runs, tract {threads} thread(s)",
                        path.display(),
                        imgs.len()
                    );
                    let s = bench::run_package(&runner, &imgs, runs)?;
                    say!("      graph  p50 {:8.2} ms   p90 {:8.2} ms", s.p50_ms, s.p90_ms);
                    if let Some(by) = profile {
                        for (op, ms) in bench::profile_package(&runner, &imgs[0], runs, by == "nodes")? {
                            say!("{op:>28}  {ms:8.2} ms");
                        }
                    }
                    return Ok(());
                }
                let m = model::TrainedModel::load(&model.expect("clap requires --model or --package"))?;
                say!("{} model, {} image(s), {runs} runs, one thread, batch 1", m.head.name(), imgs.len());
                for (stage, s) in bench::run(m, &imgs, runs)? {
                    say!("{stage:>11}  p50 {:8.2} ms   p90 {:8.2} ms", s.p50_ms, s.p90_ms);
                }
                Ok(())
            }
            Command::Synth(a) => {
                let surface = parse_surface(&a.surface)?;
                if !(32..=8192).contains(&a.size) {
                    bail!("--size {} is outside 32..=8192 px", a.size);
                }
                let spec = SynthSpec::square(surface, a.size);
                let counts =
                    synth::Counts { train: a.train, test_good: a.test_good, test_defect: a.test_defect };
                let n = synth::write_dataset(&a.out, &spec, counts, a.seed)?;
                say!("wrote {n} files to {}", a.out.display());
                Ok(())
            }
            Command::Version => {
                say!("kensa {}", env!("CARGO_PKG_VERSION"));
                say!("wire protocol {}", kensa_shared::wire::PROTOCOL_VERSION);
                Ok(())
            }
        }
    }
}

fn parse_surface(name: &str) -> Result<Surface> {
    Surface::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Surface::ALL.iter().map(|s| s.name()).collect();
        anyhow::anyhow!("unknown surface {name:?}; choose one of {}", names.join(", "))
    })
}

/// `kensa demo`: generated parts through training, evaluation and the report.
fn demo(out: &std::path::Path, surface: &str) -> Result<()> {
    let surface = parse_surface(surface)?;
    let data = out.join("data");
    let counts = synth::Counts { train: 60, test_good: 20, test_defect: 20 };
    let n = synth::write_dataset(&data, &SynthSpec::square(surface, 256), counts, 1)?;
    say!("1/3 generated {n} images of {} parts with debris in {}", surface.name(), data.display());
    let ds = dataset::Dataset::mvtec(&data)?;
    let opts =
        train::TrainOptions { method: train::Method::PatchCore { coreset: 0.1 }, ..Default::default() };
    let model = train::train(&ds, &[], &data.display().to_string(), &opts)?;
    let model_path = out.join("model.kmodel");
    model.save(&model_path)?;
    say!(
        "2/3 trained PatchCore on {} good images in {:.1} s, threshold {:.3} ({}) -> {}",
        model.training.images,
        model.training.seconds,
        model.threshold.value,
        model.threshold.rule,
        model_path.display()
    );
    let scorer = model::Scorer::new(model)?;
    let (m, cases) = eval::evaluate(&scorer, &ds, dataset::OnError::Fail)?;
    let report = out.join("report");
    report::write(&report, &scorer.model, &m, &cases)?;
    let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    let c = m.confusion;
    say!(
        "3/3 evaluated {} parts: image AUROC {}, pixel AUROC {}, AUPRO {}; at the threshold {} of {} defects caught, {} false alarms in {} good",
        cases.len(),
        f(m.image_auroc),
        f(m.pixel_auroc),
        f(m.aupro),
        c.true_ng,
        m.defective_images,
        c.false_ng,
        m.good_images
    );
    say!("report: {}", report.join("index.html").display());
    Ok(())
}
