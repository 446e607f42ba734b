//! Export: a trained model as one package the box and any ONNX runtime can run.
//!
//! The graph does everything after resizing, with standard operators only:
//!
//! ```text
//! pixels u8 [1,3,H,W] → Cast → backbone → AveragePool 3×3 (count_include_pad) per feature
//!   → Y·f·Xᵀ (MatMul ×2: bilinear resize to the finest grid) → Concat → [h·w, C]
//!   → PatchCore: x −= mean(B); min_j(|b_j|² − 2·x·Bᵀ) (MatMul + ReduceMin per 768 bank rows,
//!     Concat, ReduceMin) + |x|² → Relu → Sqrt
//!     or PaDiM: Gather channels − μ → [P,1,d] × Λ [P,d,d] (MatMul) · δ → ReduceSum → Sqrt
//!   → [h,w] → Y·grid·Xᵀ (MatMul ×2: bilinear resize to [H,W], cell offset, Gaussian blur)
//!   → anomaly_map [1,1,H,W] → Slice (every 4th px each way) → TopK → ReduceMean → score [1]
//! ```
//!
//! Each step is the exact twin of the training-time code in [`crate::embed`],
//! [`crate::map`] and [`crate::heads`], which the parity tests check number by number.
//! [`graph`] builds it, [`calibrate`] measures an int8 graph's ranges, [`package`] adds
//! the manifest, [`run`] measures the package and refuses one that lost accuracy, and
//! [`keys`] signs.

mod calibrate;
mod graph;
pub mod keys;
mod package;

use std::path::{Path, PathBuf};

use kensa_shared::package::{Package, Precision};
use kensa_shared::runtime::Runner;

pub use calibrate::calibrate;
pub use graph::{Ranges, graph};
pub use keys::{keygen, read_signing_key, sign_file, signature_path};
pub use package::{package, package_calibrated, seal};

use crate::Progress;
use crate::dataset::{Dataset, OnError};
use crate::error::{Error, Result, fail};
use crate::eval::{self, Metrics};
use crate::model::TrainedModel;

/// How `kensa export` writes and checks a package.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Number format.
    pub precision: Precision,
    /// Largest image-AUROC loss (points) a quantised package may show against fp32.
    pub max_auroc_drop: f64,
    /// Write it even when the check fails or cannot run.
    pub accept_accuracy_drop: bool,
    /// Secret key file to sign with.
    pub sign: Option<PathBuf>,
    /// Unreadable test images: fail or skip.
    pub on_error: OnError,
}

/// The dataset a model was trained on, if it is an MVTec folder that still exists.
/// Test images only, the labelled split's when the model learnt from defects.
pub fn training_data(model: &TrainedModel) -> Option<Dataset> {
    let root = Path::new(&model.training.dataset);
    let mut ds = root.join("test").is_dir().then(|| Dataset::mvtec(root).ok()).flatten()?;
    if model.training.labelled_split {
        ds.split_labelled();
    }
    Some(ds)
}

/// Accuracy of a package on a test set, run by tract exactly as the box runs it, and the
/// lowest and highest score it gave.
pub fn measure(
    pkg: &Package,
    ds: &Dataset,
    on_error: OnError,
    progress: &dyn Progress,
) -> Result<(Metrics, Option<[f32; 2]>)> {
    let runner = Runner::new(pkg, 1)?;
    let (metrics, cases) = eval::evaluate_package(&runner, ds, on_error, progress)?;
    let scores = cases.iter().map(|c| c.scored.score).filter(|s| s.is_finite());
    let range =
        scores.fold(None, |r: Option<[f32; 2]>, s| Some(r.map_or([s, s], |[lo, hi]| [lo.min(s), hi.max(s)])));
    Ok((metrics, range))
}

/// Build the package; score it on `data` when given (metrics go into the manifest), and
/// refuse a quantised package that loses more than the allowed image AUROC.
pub fn run(
    model: &TrainedModel,
    data: Option<(&Dataset, &str)>,
    opts: &ExportOptions,
    progress: &dyn Progress,
) -> Result<Package> {
    let precision = opts.precision;
    let mut pkg = package_calibrated(model, precision, Vec::new(), None, progress)?;
    match data {
        Some((ds, name)) => {
            let (got, range) = measure(&pkg, ds, opts.on_error, progress)?;
            pkg.manifest.scores_measured = range;
            let mut metrics =
                vec![("test_images".to_string(), (got.good_images + got.defective_images) as f64)];
            let named =
                [("image_auroc", got.image_auroc), ("pixel_auroc", got.pixel_auroc), ("aupro", got.aupro)];
            metrics.extend(named.iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))));
            let c = got.confusion;
            metrics.extend([
                ("good_images".to_string(), got.good_images as f64),
                ("defective_images".to_string(), got.defective_images as f64),
                ("escapes".to_string(), c.false_ok as f64),
                ("false_rejects".to_string(), c.false_ng as f64),
            ]);
            if precision != Precision::Fp32 {
                let fp32_pkg = package(model, Precision::Fp32, Vec::new())?;
                let (reference, _) = measure(&fp32_pkg, ds, opts.on_error, progress)?;
                let (Some(fp32), Some(q)) = (reference.image_auroc, got.image_auroc) else {
                    if opts.accept_accuracy_drop {
                        tracing::warn!("{name} has no defective test images: accuracy not checked");
                        pkg.manifest.metrics = metrics;
                        return sign(pkg, opts);
                    }
                    fail!(
                        AccuracyUnchecked,
                        "{name} has no defective test images, so the {precision:?} package's accuracy cannot be \
                         checked; give --data with defects, or --accept-accuracy-drop"
                    );
                };
                metrics.push(("image_auroc_fp32".into(), fp32));
                let drop = 100.0 * (fp32 - q);
                if drop > opts.max_auroc_drop {
                    if !opts.accept_accuracy_drop {
                        return Err(Error::AccuracyDrop {
                            precision: format!("{precision:?}"),
                            dataset: name.to_string(),
                            fp32,
                            quantised: q,
                            limit: opts.max_auroc_drop,
                        });
                    }
                    tracing::warn!(
                        "the {precision:?} package loses {drop:.2} points of image AUROC on {name} (fp32 \
                         {fp32:.4} → {q:.4}; limit {:.2}); written anyway (--accept-accuracy-drop)",
                        opts.max_auroc_drop
                    );
                }
            }
            pkg.manifest.metrics = metrics;
        }
        None if precision != Precision::Fp32 && !opts.accept_accuracy_drop => fail!(
            AccuracyUnchecked,
            "checking the {precision:?} package's accuracy needs test images: give --data (the training \
             dataset is not available), or --accept-accuracy-drop to skip the check"
        ),
        None => {}
    }
    sign(pkg, opts)
}

fn sign(mut pkg: Package, opts: &ExportOptions) -> Result<Package> {
    if let Some(path) = &opts.sign {
        pkg.sign(&read_signing_key(path)?);
    }
    Ok(pkg)
}
