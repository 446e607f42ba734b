//! Command-line surface: clap structs (flags only) and dispatch to the command modules.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use kensa_shared::synth::{Surface, SynthSpec};

use crate::{backbone, synth};

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
            Command::Synth(a) => {
                let Some(surface) = Surface::from_name(&a.surface) else {
                    let names: Vec<_> = Surface::ALL.iter().map(|s| s.name()).collect();
                    bail!("unknown surface {:?}; choose one of {}", a.surface, names.join(", "));
                };
                if !(32..=8192).contains(&a.size) {
                    bail!("--size {} is outside 32..=8192 px", a.size);
                }
                let spec = SynthSpec::square(surface, a.size);
                let counts =
                    synth::Counts { train: a.train, test_good: a.test_good, test_defect: a.test_defect };
                let n = synth::write_dataset(&a.out, &spec, counts, a.seed)?;
                println!("wrote {n} files to {}", a.out.display());
                Ok(())
            }
            Command::Version => {
                println!("kensa {}", env!("CARGO_PKG_VERSION"));
                println!("wire protocol {}", kensa_shared::wire::PROTOCOL_VERSION);
                Ok(())
            }
        }
    }
}
