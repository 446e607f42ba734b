//! A trained model as a [`Package`]: its graph and the manifest the box reads.

use std::time::{SystemTime, UNIX_EPOCH};

use kensa_shared::package::{Manifest, Package, Precision};
use kensa_shared::runtime::{Runner, golden_pairs};

use super::calibrate::{calibrate, calibration_images};
use super::graph::graph;
use crate::error::{Result, ensure};
use crate::map;
use crate::model::TrainedModel;

/// The package of `model` at `precision`, with `metrics` measured at export.
pub fn package(model: &TrainedModel, precision: Precision, metrics: Vec<(String, f64)>) -> Result<Package> {
    package_calibrated(model, precision, metrics, None, &crate::progress::Silent)
}

/// [`package`], an `int8` one calibrated on `calibration` (default: the first good
/// training images of the folder the model was trained on), telling `progress` how
/// calibration goes (a tiled model runs every tile of every calibration image).
pub fn package_calibrated(
    model: &TrainedModel,
    precision: Precision,
    metrics: Vec<(String, f64)>,
    calibration: Option<&[image::DynamicImage]>,
    progress: &dyn crate::Progress,
) -> Result<Package> {
    // A box refuses a package without a finite threshold; refuse to write one.
    ensure!(
        model.threshold.value.is_finite(),
        Invalid,
        "the model has no decision threshold ({}, {}): train it again, or give one with --threshold",
        model.threshold.value,
        model.threshold.rule
    );
    let ranges = match (precision, calibration) {
        (Precision::Int8, Some(images)) => Some(calibrate(model, images, progress)?),
        (Precision::Int8, None) => Some(calibrate(model, &calibration_images(model)?, progress)?),
        _ => None,
    };
    let onnx = graph(model, precision, ranges.as_ref())?;
    let t = &model.training;
    let manifest = Manifest {
        kind: model.head.kind(),
        preprocess: model.preprocess,
        tiling: model.tiling,
        threshold: model.threshold.value,
        threshold_rule: model.threshold.rule.to_string(),
        score: format!(
            "mean of the highest {:.1} % of the anomaly map, sampled every {} px",
            100.0 * model.score_top_share,
            map::SCORE_STRIDE
        ),
        precision,
        training: format!(
            "{} good + {} defective images from {}, coreset {:?}, seed {}, threshold evidence: {} good scored \
             out of sample ({} folds), {} defective",
            t.images,
            t.defect_images,
            t.dataset,
            t.coreset_ratio,
            t.seed,
            t.evidence.good.len(),
            t.folds,
            t.evidence.defective.len()
        ),
        metrics,
        created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        onnx_sha256: String::new(),
        scores_measured: None,
        golden: Vec::new(),
    };
    let mut pkg = Package::new(manifest, onnx);
    seal(&mut pkg)?;
    Ok(pkg)
}

/// Record the package's golden pairs, scored by the runtime the box runs.
pub fn seal(pkg: &mut Package) -> Result<()> {
    let runner = Runner::new(pkg, 1)?;
    pkg.manifest.golden = golden_pairs(&runner)?;
    Ok(())
}
