//! Activation ranges for an `int8` graph, observed by running the fp32 graph in tract
//! on the model's own training images.

use std::path::Path;

use kensa_shared::package::Precision;

use super::graph::{CENTRED, MIN_QUANTIZED_FAN_IN, Ranges, graph};
use crate::dataset;
use crate::error::{Error, Result, ensure};
use crate::heads::Head;
use crate::model::TrainedModel;
use crate::onnx::GraphBuilder;

/// Images calibrating an `int8` graph: the first of the model's training images.
const CALIBRATION_IMAGES: usize = 16;

/// The first [`CALIBRATION_IMAGES`] good training images (by name) of the folder the
/// model was trained on.
pub(super) fn calibration_images(model: &TrainedModel) -> Result<Vec<image::DynamicImage>> {
    let root = Path::new(&model.training.dataset);
    let good = root.join("train").join("good");
    let dir = if good.is_dir() { good } else { root.to_path_buf() };
    let mut paths = dataset::list_images(&dir).map_err(|e| {
        Error::Dataset(format!("int8 calibration reads the training images in {}: {e}", dir.display()))
    })?;
    paths.sort();
    paths.truncate(CALIBRATION_IMAGES);
    ensure!(!paths.is_empty(), Dataset, "int8 calibration found no training images in {}", dir.display());
    paths.iter().map(|p| dataset::open_image(p)).collect()
}

/// Run the fp32 graph on `images` (per tile when tiled) and record the range of every
/// tensor an int8 graph quantises: the input of each quantisable convolution (their
/// outputs stay f32) and, for PatchCore, the centred patches.
pub fn calibrate(
    model: &TrainedModel,
    images: &[image::DynamicImage],
    progress: &dyn crate::Progress,
) -> Result<Ranges> {
    use tract_onnx::prelude::*;
    let convs = GraphBuilder::extend(&model.backbone)
        .map_err(|source| Error::Onnx { context: "the model's backbone is not valid ONNX", source })?
        .quantizable_convs(MIN_QUANTIZED_FAN_IN);
    let mut names: Vec<String> = convs.into_iter().map(|(x, _)| x).collect();
    let patchcore = match &model.head {
        Head::PatchCore(_) => true,
        Head::Combined(c) => matches!(*c.anomaly, Head::PatchCore(_)),
        _ => false,
    };
    if patchcore {
        names.push(CENTRED.to_string());
    }
    names.sort();
    names.dedup();
    let onnx = graph(model, Precision::Fp32, None)?;
    let p = model.preprocess;
    let (h, w) = (p.height as usize, p.width as usize);
    let plan = kensa_shared::runtime::typed_model(&onnx, u8::fact([1, 3, h, w]).into(), &names)
        .and_then(|m| m.into_optimized()?.into_runnable())
        .map_err(Error::inference("calibration graph"))?;
    let mut ranges = Ranges::new();
    let mut observe = |crop: &image::DynamicImage| -> TractResult<()> {
        let pixels: Vec<u8> = p.apply(crop).iter().map(|&v| v as u8).collect();
        let input = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), pixels)?;
        let out = plan.run(tvec!(Tensor::from(input).into()))?;
        for (name, t) in names.iter().zip(out.iter()) {
            let v = t.to_plain_array_view::<f32>()?;
            let r = ranges.entry(name.clone()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
            for &x in v.iter() {
                r.0 = r.0.min(x);
                r.1 = r.1.max(x);
            }
        }
        Ok(())
    };
    progress.begin("calibration", images.len());
    for img in images {
        for (_, crop) in kensa_shared::tiling::crops(model.tiling, img) {
            observe(&crop).map_err(Error::inference("calibration run"))?;
        }
        progress.advance(1);
    }
    progress.end();
    Ok(ranges)
}
