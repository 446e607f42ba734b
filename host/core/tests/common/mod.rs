//! Models and package runs shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use kensa_core::dataset::{Dataset, Item, Label};
use kensa_core::export;
use kensa_core::model::TrainedModel;
use kensa_core::progress::Silent;
use kensa_core::train::supervised::{SupervisedOptions, train_supervised};
use kensa_core::train::{Method, TrainOptions, train};
use kensa_shared::package::{Package, Precision};
use kensa_shared::runtime::Runner;
use kensa_shared::synth::{Surface, SynthSpec, generate};

/// Side of the generated parts (px).
pub const SIDE: u32 = 160;

/// The parts every test model sees.
pub fn spec() -> SynthSpec {
    SynthSpec::square(Surface::Wood, SIDE)
}

/// A model whose bank outweighs the backbone, as on real lines (~1 300 × 152 here).
pub fn trained(dir: &Path) -> TrainedModel {
    trained_with(dir, Method::PatchCore { coreset: 0.5 })
}

/// An anomaly model on 12 generated good parts.
pub fn trained_with(dir: &Path, method: Method) -> TrainedModel {
    let ds = Dataset { train: items(dir, 0..12, false), ..Dataset::default() };
    let opts = TrainOptions { method, size: 128, ..Default::default() };
    train(&ds, &[], "synthetic wood", &opts, &Silent).unwrap()
}

/// `model` exported as int8, calibrated on generated good parts (not the test images).
pub fn exported_int8(model: &TrainedModel) -> Package {
    let calibration: Vec<image::DynamicImage> =
        (0..8u64).map(|i| image::DynamicImage::ImageLuma8(generate(&spec(), 500 + i, false).image)).collect();
    let pkg =
        export::package_calibrated(model, Precision::Int8, vec![], Some(&calibration), &Silent).unwrap();
    Package::from_bytes(&pkg.to_bytes()).unwrap()
}

/// Two good and two defective parts the model has not seen.
pub fn images() -> Vec<image::DynamicImage> {
    (0..4u64).map(|i| image::DynamicImage::ImageLuma8(generate(&spec(), 100 + i, i % 2 == 0).image)).collect()
}

/// Largest difference between two maps, relative to the reference's peak.
pub fn map_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "map sizes differ");
    let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / peak
}

/// `model` exported and read back from bytes, as the box would.
pub fn exported(model: &TrainedModel, precision: Precision) -> Package {
    let pkg = export::package(model, precision, vec![]).unwrap();
    Package::from_bytes(&pkg.to_bytes()).unwrap()
}

/// Score and map of each image, run by tract from the package.
pub fn tract_outputs(pkg: &Package, images: &[image::DynamicImage]) -> Vec<(f32, Vec<f32>)> {
    let runner = Runner::new(pkg, 1).unwrap();
    images.iter().map(|img| runner.score(img).map(|o| (o.score, o.map)).unwrap()).collect()
}

/// Save generated parts `seeds` (defective or not) under `dir` as dataset items.
pub fn items(dir: &Path, seeds: std::ops::Range<u64>, defective: bool) -> Vec<Item> {
    seeds
        .map(|i| {
            let path = dir.join(format!("{}{i:03}.png", if defective { "d" } else { "g" }));
            generate(&spec(), i, defective).image.save(&path).unwrap();
            let label = if defective { Label::Defect("debris".into()) } else { Label::Good };
            Item { path, label, mask: None }
        })
        .collect()
}

/// A supervised (or combined) model on generated parts: 12 good and 8 defective
/// training parts, 4 + 4 for validation.
pub fn trained_supervised(dir: &Path, combined: bool) -> TrainedModel {
    let ds = Dataset {
        train: items(dir, 0..12, false),
        train_defects: items(dir, 20..28, true),
        validation: [items(dir, 40..44, false), items(dir, 50..54, true)].concat(),
        test: Vec::new(),
    };
    let base = TrainOptions { method: Method::PatchCore { coreset: 0.5 }, size: 128, ..Default::default() };
    // Few defects on purpose: these models check export parity, not what 8 defects teach.
    let opts = SupervisedOptions { base, ng_views: 3, combined, min_defects: 8, ..Default::default() };
    train_supervised(&ds, "synthetic wood", &opts, &Silent).unwrap()
}
