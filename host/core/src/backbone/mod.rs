//! The pretrained CNN every model stands on: import from PyTorch weights, and feature
//! extraction with tract from the same ONNX file the box runs.
//!
//! A backbone is any ONNX graph with one input `[N, 3, H, W]` (f32 RGB pixels 0–255, as
//! [`kensa_shared::preprocess`] produces) and named feature outputs `[N, C, H/s, W/s]`.
//! The stride `s` of each output is measured from its shape, so users can bring their own.

pub mod efficientnet;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result, ensure, fail};
use tract_onnx::prelude::*;

pub use efficientnet::InputScaling;

/// Read a PyTorch state dict (any container `torch.save` wrote) into f32 tensors.
pub fn read_state_dict(path: &Path) -> Result<efficientnet::Weights> {
    let reader = pytorch_reader::PytorchReader::new(path)
        .map_err(|e| Error::Weights(format!("reading PyTorch weights from {}: {e}", path.display())))?;
    let mut out = efficientnet::Weights::new();
    for (name, t) in reader.tensors() {
        if t.dtype() != pytorch_reader::DType::F32 {
            continue; // e.g. BatchNorm's num_batches_tracked (i64)
        }
        let bytes = t
            .read()
            .map_err(|e| Error::Weights(format!("reading tensor {name} from {}: {e}", path.display())))?;
        let data =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        out.insert(name.clone(), (t.shape().to_vec(), data));
    }
    ensure!(!out.is_empty(), Weights, "{} holds no f32 tensors", path.display());
    Ok(out)
}

/// Parse ONNX bytes, fix the input shape, keep the named outputs, infer all shapes.
fn typed_model(onnx: &[u8], outputs: &[String], input: [usize; 4]) -> Result<TypedModel> {
    kensa_shared::runtime::typed_model(onnx, f32::fact(input).into(), outputs)
        .map_err(Error::inference(format!("backbone with outputs {outputs:?} does not load")))
}

/// Shape of each feature output for an input of `height`×`width`, read at tract's typed
/// stage (no optimisation): what export needs to build its graph.
pub fn feature_shapes(
    onnx: &[u8],
    outputs: &[String],
    height: usize,
    width: usize,
) -> Result<Vec<FeatureInfo>> {
    feature_info(&typed_model(onnx, outputs, [1, 3, height, width])?, outputs, height, width, 1)
}

fn feature_info(
    typed: &TypedModel,
    outputs: &[String],
    height: usize,
    width: usize,
    batch: usize,
) -> Result<Vec<FeatureInfo>> {
    ensure!(!outputs.is_empty(), Invalid, "no feature outputs named for the backbone");
    let mut features = Vec::new();
    for (i, name) in outputs.iter().enumerate() {
        let fact = typed.output_fact(i).map_err(Error::inference(format!("feature output {name}")))?;
        let shape: Vec<usize> = match fact.shape.as_concrete() {
            Some(s) => s.to_vec(),
            None => fail!(Invalid, "feature output {name} has no concrete shape for input {height}x{width}"),
        };
        ensure!(
            shape.len() == 4 && shape[0] == batch,
            Invalid,
            "feature output {name} has shape {shape:?}, want [N,C,h,w]"
        );
        let stride = height / shape[2];
        ensure!(
            stride > 0 && height == shape[2] * stride && width == shape[3] * stride,
            Invalid,
            "feature output {name} ({}x{}) is not an integer subsampling of the {height}x{width} input",
            shape[2],
            shape[3]
        );
        features.push(FeatureInfo {
            name: name.clone(),
            channels: shape[1],
            height: shape[2],
            width: shape[3],
            stride,
        });
    }
    Ok(features)
}

/// One feature output of a loaded backbone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Output name in the ONNX graph.
    pub name: String,
    /// Channels.
    pub channels: usize,
    /// Feature-map height and width for the configured input size.
    pub height: usize,
    /// Feature-map width.
    pub width: usize,
    /// Input pixels per feature cell.
    pub stride: usize,
}

/// Feature maps of one image, one `[C, h, w]` array per output, in output order.
pub type FeatureMaps = Vec<tract_ndarray::Array3<f32>>;

/// A backbone optimised for a fixed input size and batch, ready to run.
#[derive(Clone)]
pub struct Backbone {
    plan: Arc<TypedRunnableModel>,
    /// Feature outputs, in the order requested.
    pub features: Vec<FeatureInfo>,
    /// Input height (px).
    pub height: usize,
    /// Input width (px).
    pub width: usize,
    /// Images per run.
    pub batch: usize,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone").field("features", &self.features).field("batch", &self.batch).finish()
    }
}

impl Backbone {
    /// Load `onnx`, keep only the `outputs` named, and optimise for `batch`×3×`height`×`width`.
    pub fn load(onnx: &[u8], outputs: &[String], height: usize, width: usize, batch: usize) -> Result<Self> {
        let typed = typed_model(onnx, outputs, [batch, 3, height, width])?;
        let features = feature_info(&typed, outputs, height, width, batch)?;
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(Error::inference("optimising the backbone"))?;
        Ok(Self { plan, features, height, width, batch })
    }

    /// Load from a file.
    pub fn load_path(
        path: &Path,
        outputs: &[String],
        height: usize,
        width: usize,
        batch: usize,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io("reading backbone", path))?;
        Self::load(&bytes, outputs, height, width, batch).map_err(|e| Error::Inference {
            context: format!("loading backbone {}", path.display()),
            source: e.into(),
        })
    }

    /// Run one batch. `input` holds `n ≤ batch` preprocessed images back to back
    /// (`[n, 3, H, W]`); the batch is zero-padded and the padding's features dropped.
    pub fn run(&self, input: &[f32], n: usize) -> Result<Vec<FeatureMaps>> {
        let per = 3 * self.height * self.width;
        ensure!(
            n >= 1 && n <= self.batch && input.len() == n * per,
            Invalid,
            "backbone input holds {} values for {n} images",
            input.len()
        );
        let mut data = input.to_vec();
        data.resize(self.batch * per, 0.0);
        let run = || -> TractResult<Vec<FeatureMaps>> {
            let t = tract_ndarray::Array4::from_shape_vec((self.batch, 3, self.height, self.width), data)?;
            let outs = self.plan.run(tvec!(Tensor::from(t).into()))?;
            let mut per_image: Vec<FeatureMaps> = (0..n).map(|_| Vec::with_capacity(outs.len())).collect();
            for out in outs.iter() {
                let a = out.to_plain_array_view::<f32>()?.into_dimensionality::<tract_ndarray::Ix4>()?;
                for (i, maps) in per_image.iter_mut().enumerate() {
                    maps.push(a.index_axis(tract_ndarray::Axis(0), i).to_owned());
                }
            }
            Ok(per_image)
        };
        run().map_err(Error::inference("running the backbone"))
    }
}

/// Feature blocks Lite0 exports by default: stride 8 (block 4, 40 channels) and stride 16
/// (block 7, 80 channels; block 10, 112 channels). See docs/benchmarks.md for the choice;
/// Lite1 and Lite2 export the same stages' last blocks.
pub const DEFAULT_FEATURE_BLOCKS: [usize; 3] = [4, 7, 10];

/// The feature outputs a model trains on by default from a backbone this crate imported:
/// its finest and its coarsest (for Lite0 `block4` and `block10`), read from the
/// `kensa.features` entry the import writes into the graph.
pub fn default_features(onnx: &[u8]) -> Result<Vec<String>> {
    use prost::Message as _;
    let model = tract_onnx::pb::ModelProto::decode(onnx)
        .map_err(|e| Error::Weights(format!("the backbone is not an ONNX model: {e}")))?;
    let listed =
        model.metadata_props.iter().find(|p| p.key == "kensa.features").map(|p| p.value.clone()).ok_or_else(
            || {
                Error::Invalid(
                    "the backbone does not list its feature outputs (kensa.features): give --features".into(),
                )
            },
        )?;
    let names: Vec<String> = listed
        .split(',')
        .filter_map(|e| e.split(':').next())
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    match (names.first(), names.last()) {
        (Some(a), Some(b)) if a != b => Ok(vec![a.clone(), b.clone()]),
        (Some(a), _) => Ok(vec![a.clone()]),
        _ => fail!(Invalid, "the backbone lists no feature outputs: give --features"),
    }
}

/// What `import` wrote: the graph and its feature outputs as `(block, stride)`.
#[derive(Debug, Clone)]
pub struct Imported {
    /// ONNX bytes.
    pub onnx: Vec<u8>,
    /// Which EfficientNet-Lite.
    pub name: String,
    /// Feature outputs `block<i>` and their strides.
    pub features: Vec<(usize, usize)>,
}

/// The ImageNet input side the classifier was trained at.
const CLASSIFY_SIZE: usize = 224;

/// An EfficientNet-Lite as ONNX bytes from the PyTorch weights at `pth`, its provenance
/// (file name and sha256) written into the graph.
pub fn import(pth: &Path, spec: &efficientnet::GraphSpec) -> Result<Imported> {
    let weights = read_state_dict(pth)?;
    let arch = efficientnet::Architecture::from_weights(&weights)
        .map_err(|e| Error::Weights(format!("{}: {e}", pth.display())))?;
    let blocks =
        if spec.feature_blocks.is_empty() { arch.default_features() } else { spec.feature_blocks.clone() };
    // pytorch-reader reads tensor data lazily from the path, so the checksum needs a second
    // pass over the file (18 MB for EfficientNet-Lite0).
    let bytes = std::fs::read(pth).map_err(Error::io("reading", pth))?;
    let provenance = format!(
        "{} sha256:{}",
        pth.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        kensa_shared::sha256_hex(&bytes)
    );
    let onnx = efficientnet::build(&weights, spec, &provenance)
        .map_err(|e| Error::Weights(format!("building {} from {}: {e}", arch.name().1, pth.display())))?;
    let features =
        blocks.iter().filter(|&&b| b < arch.blocks.len()).map(|&b| (b, arch.stride_after(b))).collect();
    Ok(Imported { onnx, name: arch.name().1, features })
}

/// Top-5 `(class, probability)` for each image.
pub fn classify(model: &Path, images: &[std::path::PathBuf]) -> Result<Vec<Vec<(usize, f32)>>> {
    let bytes = std::fs::read(model).map_err(Error::io("reading backbone", model))?;
    let as_classifier = || format!("loading {} as a classifier", model.display());
    let plan = typed_model(&bytes, &[efficientnet::LOGITS.to_string()], [1, 3, CLASSIFY_SIZE, CLASSIFY_SIZE])
        .map_err(|e| Error::Inference { context: as_classifier(), source: e.into() })?
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(Error::inference(as_classifier()))?;
    let pre = kensa_shared::preprocess::Preprocess {
        width: CLASSIFY_SIZE as u32,
        height: CLASSIFY_SIZE as u32,
        resize: kensa_shared::preprocess::Resize::Stretch,
        colour: kensa_shared::preprocess::Colour::Rgb,
    };
    images
        .iter()
        .map(|path| {
            let img = crate::dataset::open_image(path)?;
            let logits = (|| -> TractResult<Vec<f32>> {
                let input = Tensor::from_shape(&[1, 3, CLASSIFY_SIZE, CLASSIFY_SIZE], &pre.apply(&img))?;
                let out = plan.run(tvec!(input.into()))?;
                Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            })()
            .map_err(Error::inference(format!("classifying {}", path.display())))?;
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            let mut p: Vec<(usize, f32)> = logits.iter().map(|l| (l - max).exp() / z).enumerate().collect();
            p.sort_by(|a, b| b.1.total_cmp(&a.1));
            p.truncate(5);
            Ok(p)
        })
        .collect()
}
