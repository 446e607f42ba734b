//! Flags turned into ready values: which images, which split, which training options.
//! Everything here is decided before any image is read, so it is unit-tested on parsed
//! command lines alone.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kensa_core::dataset::{Dataset, Item, Label, OnError, list_images};
use kensa_core::train::supervised::SupervisedOptions;
use kensa_core::train::{Method, TrainOptions};
use kensa_shared::package::Precision;
use kensa_shared::preprocess::Colour;
use kensa_shared::synth::Surface;
use kensa_shared::tiling::Tiling;

use crate::cli::{DataArgs, MethodArg, PrecisionArg, ScalingArg, SurfaceArg, TrainArgs};

/// Share of a plain good folder held out as good test images.
const PLAIN_GOOD_HOLDOUT: f64 = 0.2;

/// Where a command's images come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An MVTec-layout folder.
    Mvtec(PathBuf),
    /// A good folder, defect folders and an optional mask folder.
    Folders {
        /// Good images.
        good: PathBuf,
        /// One folder per defect type.
        defects: Vec<PathBuf>,
        /// Masks named after the defect images.
        masks: Option<PathBuf>,
    },
}

/// A dataset to load, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// The folders.
    pub source: Source,
    /// Use the labelled split's held-out test images ([`Dataset::split_labelled`]).
    pub split: bool,
    /// Unreadable images: fail or skip.
    pub on_error: OnError,
}

impl Data {
    /// The images `--data`/`--good` name, or `None` when neither is given.
    pub fn from_args(a: &DataArgs) -> Option<Self> {
        let source = match (&a.data, &a.good) {
            (Some(root), _) => Source::Mvtec(root.clone()),
            (None, Some(good)) => {
                Source::Folders { good: good.clone(), defects: a.defect.clone(), masks: a.masks.clone() }
            }
            (None, None) => return None,
        };
        Some(Self { source, split: a.split, on_error: on_error(a.skip_bad) })
    }

    /// [`Self::from_args`], refusing a command line that names no images.
    pub fn required(a: &DataArgs) -> Result<Self> {
        Self::from_args(a).context("say where the images are: --data <mvtec folder> or --good <folder>")
    }

    /// The same images, split as a model trained on a labelled split must be measured:
    /// on that split's held-out test images, never on the images it learnt from.
    pub fn for_model(self, trained_on_split: bool) -> Self {
        Self { split: self.split || trained_on_split, ..self }
    }

    /// List the files (and split them); the name is the folder as given, for reports.
    pub fn load(&self) -> Result<(Dataset, String)> {
        let (mut ds, name) = match &self.source {
            Source::Mvtec(root) => (Dataset::mvtec(root)?, root.display().to_string()),
            Source::Folders { good, defects, masks } => (
                Dataset::folders(good, defects, masks.as_deref(), PLAIN_GOOD_HOLDOUT)?,
                good.display().to_string(),
            ),
        };
        if self.split {
            ds.split_labelled();
        }
        Ok((ds, name))
    }
}

/// `--skip-bad` as a policy.
pub fn on_error(skip_bad: bool) -> OnError {
    if skip_bad { OnError::Skip } else { OnError::Fail }
}

/// Which model `kensa train` fits.
#[derive(Debug, Clone)]
pub enum Fit {
    /// PatchCore or PaDiM from good images; `validation_defects` (folders) set an
    /// F1-optimal threshold.
    Anomaly {
        /// The options.
        options: TrainOptions,
        /// Folders of defective validation images.
        validation_defects: Vec<PathBuf>,
    },
    /// An OK/NG head (optionally combined with an anomaly head) from labelled defects.
    Supervised(SupervisedOptions),
}

/// Everything `kensa train` needs, decided.
#[derive(Debug, Clone)]
pub struct Train {
    /// The images; supervised training always uses the labelled split.
    pub data: Data,
    /// What to fit.
    pub fit: Fit,
    /// The model file to write.
    pub out: PathBuf,
}

impl Train {
    /// Turn `kensa train` flags into a plan. Reads the backbone file when one is given.
    pub fn from_args(a: &TrainArgs) -> Result<Self> {
        let mut data = Data::required(&a.data)?;
        let mut options = TrainOptions {
            method: match a.method {
                MethodArg::Patchcore => Method::PatchCore { coreset: a.coreset },
                MethodArg::Padim => Method::Padim { channels: a.channels },
            },
            size: a.size,
            colour: if a.rgb { Colour::Rgb } else { Colour::Gray },
            folds: a.folds,
            frr: a.frr,
            confidence: a.confidence,
            seed: a.seed,
            on_error: data.on_error,
            tiling: a.tile.map(|tile| Tiling { tile, overlap: a.tile_overlap }),
            max_patches: a.max_patches,
            score_top_share: a.score_top,
            ..Default::default()
        };
        if let Some(b) = &a.backbone {
            options.backbone =
                std::fs::read(b).with_context(|| format!("reading backbone {}", b.display()))?;
            if a.features.is_empty() {
                options.features = kensa_core::backbone::default_features(&options.backbone)
                    .with_context(|| format!("backbone {}", b.display()))?;
            }
        }
        if !a.features.is_empty() {
            options.features = a.features.clone();
        }
        let fit = if a.supervised {
            data.split = true;
            Fit::Supervised(SupervisedOptions {
                base: options,
                ng_views: a.ng_views,
                combined: a.combined,
                ..Default::default()
            })
        } else {
            Fit::Anomaly { options, validation_defects: a.val_defect.clone() }
        };
        Ok(Self { data, fit, out: a.out.clone() })
    }
}

/// A training config file (TOML, one key per `kensa train` flag) as flags.
pub fn config_flags(text: &str) -> Result<Vec<String>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        let mut one = |v: &toml::Value| -> Result<()> {
            match v {
                toml::Value::Boolean(true) => flags.push(flag.clone()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => flags.extend([flag.clone(), s.clone()]),
                toml::Value::Integer(i) => flags.extend([flag.clone(), i.to_string()]),
                toml::Value::Float(f) => flags.extend([flag.clone(), f.to_string()]),
                other => bail!("{key}: {other} is not a flag value"),
            }
            Ok(())
        };
        match &value {
            toml::Value::Array(items) => items.iter().try_for_each(&mut one)?,
            v => one(v)?,
        }
    }
    Ok(flags)
}

/// The images of `--val-defect` folders, each folder one defect type.
pub fn validation_defects(dirs: &[PathBuf]) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    for dir in dirs {
        let kind = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for path in list_images(dir)? {
            out.push(Item { path, label: Label::Defect(kind.clone()), mask: None });
        }
    }
    Ok(out)
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Int8Weights => Precision::Int8Weights,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

impl From<SurfaceArg> for Surface {
    fn from(s: SurfaceArg) -> Self {
        match s {
            SurfaceArg::BrushedMetal => Surface::BrushedMetal,
            SurfaceArg::Fabric => Surface::Fabric,
            SurfaceArg::Wood => Surface::Wood,
            SurfaceArg::MattePlastic => Surface::MattePlastic,
        }
    }
}

impl From<ScalingArg> for kensa_core::backbone::InputScaling {
    fn from(s: ScalingArg) -> Self {
        match s {
            ScalingArg::Symmetric => Self::Symmetric,
            ScalingArg::Imagenet => Self::Imagenet,
        }
    }
}

/// Side of generated parts: the generator's range.
pub fn synth_size(size: u32) -> Result<u32> {
    if !(32..=8192).contains(&size) {
        bail!("--size {size} is outside 32..=8192 px");
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_config_file_becomes_the_flags_it_names() {
        let flags = config_flags(
            "coreset = 0.05\ntile = 512\nrgb = true\nsplit = false\nval_defect = [\"a\", \"b\"]\n",
        )
        .unwrap();
        assert_eq!(
            flags,
            ["--coreset", "0.05", "--rgb", "--tile", "512", "--val-defect", "a", "--val-defect", "b"]
        );
        assert!(config_flags("method = { a = 1 }").is_err());
        assert!(config_flags("coreset = ").is_err());
    }

    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn train(args: &[&str]) -> Train {
        let cli = Cli::try_parse_from([&["kensa", "train", "-o", "m.kmodel"], args].concat()).unwrap();
        let Command::Train(a) = cli.command else { panic!("not train") };
        Train::from_args(&a).unwrap()
    }

    fn data(args: &[&str]) -> Option<Data> {
        let cli = Cli::try_parse_from([&["kensa", "eval", "-m", "m.kmodel"], args].concat()).unwrap();
        let Command::Eval(a) = cli.command else { panic!("not eval") };
        Data::from_args(&a.data)
    }

    #[test]
    fn a_model_trained_on_a_labelled_split_evaluates_on_the_held_out_split() {
        let asked = data(&["--data", "tiles"]).unwrap();
        assert!(!asked.split);
        assert!(asked.clone().for_model(true).split, "the split the model learnt from is held out");
        assert!(!asked.for_model(false).split, "an anomaly model sees the whole test set");
        assert!(data(&["--data", "tiles", "--split"]).unwrap().for_model(false).split);
    }

    #[test]
    fn supervised_training_implies_the_labelled_split() {
        let t = train(&["--good", "ok", "--defect", "ng", "--supervised", "--combined", "--ng-views", "3"]);
        assert!(t.data.split);
        let Fit::Supervised(o) = t.fit else { panic!("not supervised") };
        assert_eq!((o.ng_views, o.combined), (3, true));
        let t = train(&["--data", "tiles"]);
        assert!(!t.data.split);
        assert!(matches!(t.fit, Fit::Anomaly { .. }));
    }

    #[test]
    fn training_flags_become_options() {
        let t = train(&["--data", "d", "--method", "padim", "--channels", "50", "--rgb", "--tile", "512"]);
        let Fit::Anomaly { options: o, validation_defects } = t.fit else { panic!("not anomaly") };
        assert_eq!(o.method, Method::Padim { channels: 50 });
        assert_eq!(o.colour, Colour::Rgb);
        assert_eq!(o.tiling, Some(Tiling { tile: 512, overlap: 64 }));
        assert!(validation_defects.is_empty());
        assert_eq!(t.data.source, Source::Mvtec("d".into()));
        let t = train(&["--good", "ok", "--defect", "a", "--defect", "b", "--skip-bad"]);
        assert_eq!(t.data.on_error, OnError::Skip);
        let Source::Folders { defects, masks, .. } = t.data.source else { panic!("not folders") };
        assert_eq!((defects.len(), masks), (2, None));
    }

    #[test]
    fn no_images_named_is_refused_with_the_flags_to_use() {
        assert_eq!(data(&[]), None);
        let cli = Cli::try_parse_from(["kensa", "train", "-o", "m.kmodel"]).unwrap();
        let Command::Train(a) = cli.command else { panic!("not train") };
        let err = Train::from_args(&a).unwrap_err().to_string();
        assert!(err.contains("--data") && err.contains("--good"), "{err}");
    }

    #[test]
    fn closed_sets_map_onto_the_library_types() {
        assert_eq!(Precision::from(PrecisionArg::Int8Weights), Precision::Int8Weights);
        assert_eq!(Surface::from(SurfaceArg::MattePlastic), Surface::MattePlastic);
        for s in <SurfaceArg as clap::ValueEnum>::value_variants() {
            let name = clap::ValueEnum::to_possible_value(s).unwrap().get_name().to_string();
            assert_eq!(Surface::from(*s).name(), name, "flag name and generator name agree");
        }
        assert!(synth_size(16).unwrap_err().to_string().contains("32..=8192"));
    }
}
