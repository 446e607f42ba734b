//! `kensa export`: a trained model as one package the box and any ONNX runtime can run.
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
//! Each step is the exact twin of the training-time code in `anomaly::{embed, map,
//! patchcore, padim}`, which the parity tests check number by number.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use kensa_shared::package::{
    INPUT, MAP_OUTPUT, Manifest, Package, Precision, SCORE_OUTPUT, key_hex, parse_key_hex,
};
use kensa_shared::runtime::Runner;
use tract_onnx::pb::tensor_proto::DataType;

use crate::anomaly::embed::{POOL, resize_plane};
use crate::anomaly::map::{self, Separable};
use crate::anomaly::{padim::Padim, patchcore::PatchCore};
use crate::backbone::Backbone;
use crate::dataset::{Dataset, OnError};
use crate::eval::{self, Metrics};
use crate::model::{Affine, Head, TrainedModel};
use crate::onnx::{
    Attr, Dim, GraphBuilder, WEIGHT_ZERO_U8, dequantize, offset_u8, quantize_symmetric, u8_params,
};
use crate::supervised::classifier::Classifier;

/// Weights with a smaller fan-in per output channel are stored as f16, not int8, in an
/// int8-weights graph: with the stem and depthwise kernels (9–27 values per channel) in
/// int8, a good part's map moved by 13 % of its peak on the parity test's model; as f16,
/// by under 3 %.
const MIN_QUANTIZED_FAN_IN: usize = 32;

/// Observed `(min, max)` of graph tensors, by name: the activation ranges an `int8`
/// graph is quantised with.
pub type Ranges = std::collections::HashMap<String, (f32, f32)>;

/// Images calibrating an `int8` graph: the first of the model's training images.
const CALIBRATION_IMAGES: usize = 16;

/// The scoring graph of `model` (ONNX bytes) at `precision`; `Int8` needs the activation
/// `ranges` ([`calibrate`]).
pub fn graph(model: &TrainedModel, precision: Precision, ranges: Option<&Ranges>) -> Result<Vec<u8>> {
    let p = model.preprocess;
    let (h, w) = (p.height as i64, p.width as i64);
    let info = Backbone::load(&model.backbone, &model.features, h as usize, w as usize, 1)
        .context("loading the model's backbone")?
        .features;
    let mut g = GraphBuilder::extend(&model.backbone).context("the model's backbone is not valid ONNX")?;
    match precision {
        Precision::Fp32 => {}
        Precision::Int8Weights => {
            g.quantize_weights(MIN_QUANTIZED_FAN_IN);
        }
        Precision::Int8 => {
            let ranges = ranges.context("an int8 graph needs calibrated activation ranges")?;
            let n = g.quantize_convs(ranges, MIN_QUANTIZED_FAN_IN);
            tracing::info!("{n} convolutions quantised to ConvInteger");
            // The convolutions left in float (stem, depthwise) keep int8 storage.
            g.quantize_weights(MIN_QUANTIZED_FAN_IN);
        }
    }
    let backbone_input = g.input_names().into_iter().next().context("the backbone has no input")?;
    g.remove_input(&backbone_input);
    g.input(INPUT, DataType::Uint8, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)]);
    g.node_first("Cast", &[INPUT], &[&backbone_input], &[("to", Attr::Int(DataType::Float as i64))]);

    // Embedding: pool, align to the finest grid, concatenate.
    let (gh, gw) = (info[0].height as i64, info[0].width as i64);
    let r = (POOL / 2) as i64;
    let mut parts = Vec::new();
    for f in &info {
        let pooled = g.op(
            "AveragePool",
            &[&f.name],
            &[
                ("kernel_shape", Attr::Ints(vec![POOL as i64; 2])),
                ("pads", Attr::Ints(vec![r; 4])),
                ("count_include_pad", Attr::Int(1)),
            ],
        );
        parts.push(if (f.height as i64, f.width as i64) == (gh, gw) {
            pooled
        } else {
            let (fh, fw) = (f.height, f.width);
            let op = Separable::measure(
                |p| resize_plane(p, fh, fw, gh as usize, gw as usize),
                (fh, fw),
                (gh as usize, gw as usize),
            );
            // Interpolation weights stay f32 at every precision: 4 KB, and in int8 they
            // would move every feature.
            separable(&mut g, "align", &pooled, &op, false)
        });
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let cat = g.op("Concat", &refs, &[("axis", Attr::Int(1))]);
    let dim = info.iter().map(|f| f.channels as i64).sum::<i64>();
    let nhwc = g.op("Transpose", &[&cat], &[("perm", Attr::Ints(vec![0, 2, 3, 1]))]);
    let shape = g.constant_i64("patches.shape", &[2], &[gh * gw, dim]);
    let x = g.op("Reshape", &[&nhwc, &shape], &[]);

    let d = head(&mut g, &x, &model.head, precision, ranges);

    // Map: upsample, correct the cell offset and blur, all as `Y · grid · Xᵀ`.
    let (hu, wu, ghu, gwu) = (h as usize, w as usize, gh as usize, gw as usize);
    let op = Separable::measure(|p| map::anomaly_map(p, ghu, gwu, hu, wu), (ghu, gwu), (hu, wu));
    let plane_shape = g.constant_i64("grid.plane", &[2], &[gh, gw]);
    let plane = g.op("Reshape", &[&d, &plane_shape], &[]);
    let wide = separable(&mut g, "map", &plane, &op, precision != Precision::Fp32);
    let map_shape = g.constant_i64("map.shape", &[4], &[1, 1, h, w]);
    g.node("Reshape", &[&wide, &map_shape], &[MAP_OUTPUT], &[]);

    // Score: mean of the top share of the map's samples.
    let stride = map::SCORE_STRIDE as i64;
    let s_starts = g.constant_i64("score.starts", &[2], &[0, 0]);
    let s_ends = g.constant_i64("score.ends", &[2], &[h, w]);
    let s_axes = g.constant_i64("score.axes", &[2], &[2, 3]);
    let s_steps = g.constant_i64("score.steps", &[2], &[stride, stride]);
    let samples = g.op("Slice", &[MAP_OUTPUT, &s_starts, &s_ends, &s_axes, &s_steps], &[]);
    let n = ((h + stride - 1) / stride) * ((w + stride - 1) / stride);
    let top = map::top_count(model.score_top_share, n as usize) as i64;
    let flat_shape = g.constant_i64("score.flat", &[2], &[1, n]);
    let flat = g.op("Reshape", &[&samples, &flat_shape], &[]);
    let kk = g.constant_i64("score.k", &[1], &[top]);
    let (values, indices) = (g.fresh("topk_values"), g.fresh("topk_indices"));
    g.node("TopK", &[&flat, &kk], &[&values, &indices], &[("axis", Attr::Int(-1))]);
    g.node(
        "ReduceMean",
        &[&values],
        &[SCORE_OUTPUT],
        &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))],
    );

    g.output(MAP_OUTPUT, DataType::Float, &[Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(h), Dim::Fixed(w)]);
    g.output(SCORE_OUTPUT, DataType::Float, &[Dim::Fixed(1)]);
    Ok(g.finish("Kensa anomaly scoring graph: u8 pixels in, anomaly map and score out", &[]))
}

/// `[P, dim]` patches → `[P]` patch scores of `head`.
fn head(g: &mut GraphBuilder, x: &str, head: &Head, precision: Precision, ranges: Option<&Ranges>) -> String {
    match head {
        Head::PatchCore(pc) => patchcore_head(g, x, pc, precision, ranges),
        Head::Padim(pd) => padim_head(g, x, pd, precision),
        Head::Supervised(c) => classifier_head(g, x, c),
        Head::Combined(c) => {
            let a = self::head(g, x, &c.anomaly, precision, ranges);
            let s = classifier_head(g, x, &c.classifier);
            let a = affine(g, &a, c.anomaly_scale);
            let s = affine(g, &s, c.classifier_scale);
            g.op("Add", &[&a, &s], &[])
        }
    }
}

/// Classifier head: `x · w + b` per patch (kept in f32 at every precision: it is
/// `dim` + 1 numbers).
fn classifier_head(g: &mut GraphBuilder, x: &str, c: &Classifier) -> String {
    let w = g.constant_f32("classifier.weights", &[c.weights.len() as i64, 1], &c.weights);
    let z = g.op("MatMul", &[x, &w], &[]);
    let flat = g.constant_i64("classifier.flat", &[1], &[-1]);
    let z = g.op("Reshape", &[&z, &flat], &[]);
    let b = g.constant_f32("classifier.bias", &[1], &[c.bias]);
    g.op("Add", &[&z, &b], &[])
}

/// `x · scale + offset`.
fn affine(g: &mut GraphBuilder, x: &str, a: Affine) -> String {
    let (sn, on) = (g.fresh("affine.scale"), g.fresh("affine.offset"));
    let scale = g.constant_f32(&sn, &[1], &[a.scale]);
    let offset = g.constant_f32(&on, &[1], &[a.offset]);
    let y = g.op("Mul", &[x, &scale], &[]);
    g.op("Add", &[&y, &offset], &[])
}

/// The PatchCore head's patches, centred on the bank mean (observed by [`calibrate`]).
const CENTRED: &str = "patches.centred";

/// Bank rows per product in the PatchCore head (see [`patchcore_head`]).
const BANK_CHUNK: usize = 768;

/// PatchCore head: `[P, dim]` patches → `[P]` distance to the nearest bank row.
fn patchcore_head(
    g: &mut GraphBuilder,
    x: &str,
    pc: &PatchCore,
    precision: Precision,
    ranges: Option<&Ranges>,
) -> String {
    let dim = pc.dim as i64;
    // Nearest neighbour: d² = |x|² − 2 x·b + |b|², min over the bank. Patches and bank
    // are first centred on the bank mean (distances do not change): smaller norms mean
    // less cancellation in the sum, which matters once the bank is stored as int8.
    let rows = pc.rows();
    let mut mean = vec![0.0f64; pc.dim];
    for row in pc.bank.chunks_exact(pc.dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64 / rows as f64;
        }
    }
    let mean: Vec<f32> = mean.into_iter().map(|m| m as f32).collect();
    let centre = g.constant_f32("bank.mean", &[1, dim], &mean);
    g.node("Sub", &[x, &centre], &[CENTRED], &[]);
    let x = CENTRED.to_string();
    // int8: the patches as u8 per tensor (range observed in calibration), the bank as
    // symmetric 8-bit per row (stored as u8, `onnx::offset_u8`), multiplied by MatMulInteger (exact int32 sums) and brought back to
    // f32 per bank row. 8-bit *outputs* (QLinearMatMul) would not do: a squared distance
    // is a small difference of large terms.
    let quantised_x = match (precision, ranges.and_then(|r| r.get(CENTRED))) {
        (Precision::Int8, Some(&range)) => {
            let (sx, zx) = u8_params(range);
            let z = g.constant_u8("patches.zero", &[], &[zx]);
            let q = g.quantize_u8("patches", &x, sx, zx);
            let bank_zero = g.constant_u8("bank.zero", &[], &[WEIGHT_ZERO_U8]);
            Some((q, sx, z, bank_zero))
        }
        _ => None,
    };
    // x · Bᵀ with the reduction along the contiguous axis: B · xᵀ lets tract pack the
    // bank once (matmul 53 → 43 ms on magnetic_tile) but its ReduceMin over the strided
    // axis then costs 63 ms instead of 3. The bank goes in slices of BANK_CHUNK rows,
    // each with its own ReduceMin: a slice's products (1 024 × 768 × 4 B = 3 MB) stay in
    // cache, where one product over the whole bank streams 24 MB out and back. (An
    // element-wise Min across slices instead is fused by tract into one pass after all
    // products, which brings the 24 MB back.)
    let mut minima = Vec::new();
    for (ci, first) in (0..rows).step_by(BANK_CHUNK).enumerate() {
        let n = BANK_CHUNK.min(rows - first);
        let mut bt = vec![0.0f32; pc.dim * n];
        for (j, row) in pc.bank.chunks_exact(pc.dim).skip(first).take(n).enumerate() {
            for (c, v) in row.iter().enumerate() {
                bt[c * n + j] = -2.0 * (v - mean[c]);
            }
        }
        let bt_dims = [dim, n as i64];
        let bt_name = format!("bank.{ci}.minus2_t");
        // Quantised banks: one scale per bank row (column of Bᵀ), and |b|² from the
        // dequantised rows so the distance stays a true squared distance.
        let (dots, bt) = match &quantised_x {
            Some((xq, sx, xz, bz)) => {
                let (q, scales) = quantize_symmetric(&bt, &bt_dims, 1);
                let qn = g.constant_u8(&bt_name, &bt_dims, &offset_u8(&q));
                let dots = g.op("MatMulInteger", &[xq, &qn, xz, bz], &[]);
                let per_row: Vec<f32> = scales.iter().map(|s| s * sx).collect();
                let sn = g.constant_f32(&format!("bank.{ci}.scale"), &[n as i64], &per_row);
                let dots = g.op("DequantizeLinear", &[&dots, &sn], &[("axis", Attr::Int(1))]);
                (dots, dequantize(&q, &scales, &bt_dims, 1))
            }
            None => {
                let bt = match precision {
                    Precision::Fp32 => {
                        g.constant_f32(&bt_name, &bt_dims, &bt);
                        bt
                    }
                    Precision::Int8Weights | Precision::Int8 => g.constant_q8(&bt_name, &bt_dims, &bt, 1),
                };
                (g.op("MatMul", &[&x, &bt_name], &[]), bt)
            }
        };
        let mut bb = vec![0.0f32; n];
        for (i, v) in bt.iter().enumerate() {
            bb[i % n] += 0.25 * v * v;
        }
        let bb = g.constant_f32(&format!("bank.{ci}.sq_norm"), &[1, n as i64], &bb);
        let d2 = g.op("Add", &[&dots, &bb], &[]);
        minima.push(g.op("ReduceMin", &[&d2], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))]));
    }
    let refs: Vec<&str> = minima.iter().map(String::as_str).collect();
    let d2 =
        if refs.len() == 1 { minima[0].clone() } else { g.op("Concat", &refs, &[("axis", Attr::Int(1))]) };
    let d2 = g.op("ReduceMin", &[&d2], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]);
    // min_j(|b_j|² − 2 x·b_j), then |x|² once per patch (not once per bank row), as
    // the training-time search does.
    let xx = g.op("ReduceSumSquare", &[&x], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]);
    let d2 = g.op("Add", &[&d2, &xx], &[]);
    let d2 = g.op("Relu", &[&d2], &[]);
    g.op("Sqrt", &[&d2], &[])
}

/// PaDiM head: `[P, dim]` patches → `[P]` Mahalanobis distance to each position's
/// Gaussian, as one batched MatMul: `q = Σ_b (Σ_a δ_a Λ_ab) δ_b` with `δ = x[ch] − μ`.
fn padim_head(g: &mut GraphBuilder, x: &str, pd: &Padim, precision: Precision) -> String {
    let (positions, d) = ((pd.grid.0 * pd.grid.1) as i64, pd.channels.len() as i64);
    let idx: Vec<i64> = pd.channels.iter().map(|&c| c as i64).collect();
    let idx = g.constant_i64("padim.channels", &[d], &idx);
    let sel = g.op("Gather", &[x, &idx], &[("axis", Attr::Int(1))]);
    let mean = g.constant_f32("padim.mean", &[positions, d], &pd.mean);
    let delta = g.op("Sub", &[&sel, &mean], &[]);
    let shape = g.constant_i64("padim.delta_shape", &[3], &[positions, 1, d]);
    let delta = g.op("Reshape", &[&delta, &shape], &[]);
    let dims = [positions, d, d];
    // Int8: one scale per position's matrix.
    match precision {
        Precision::Fp32 => {
            g.constant_f32("padim.precision", &dims, &pd.precision);
        }
        Precision::Int8Weights | Precision::Int8 => {
            g.constant_q8("padim.precision", &dims, &pd.precision, 0);
        }
    }
    let y = g.op("MatMul", &[&delta, "padim.precision"], &[]);
    let prod = g.op("Mul", &[&y, &delta], &[]);
    let axes = g.constant_i64("padim.sum_axes", &[1], &[2]);
    let q = g.op("ReduceSum", &[&prod, &axes], &[("keepdims", Attr::Int(0))]);
    let flat = g.constant_i64("padim.flat", &[1], &[positions]);
    let q = g.op("Reshape", &[&q, &flat], &[]);
    let q = g.op("Relu", &[&q], &[]);
    g.op("Sqrt", &[&q], &[])
}

/// `op` (`Y · x · Xᵀ`) over the last two axes of `x`; with `int8`, `Y` and `X` are
/// stored int8 per row (a map's are 64 KB in f32, 7 % of battery_weld's int8 package).
fn separable(g: &mut GraphBuilder, prefix: &str, x: &str, op: &Separable, int8: bool) -> String {
    let ((sh, sw), (dh, dw)) = (op.src, op.dst);
    let (rn, cn) = (g.fresh(&format!("{prefix}.rows")), g.fresh(&format!("{prefix}.cols_t")));
    let (rows_dims, cols_dims) = ([dh as i64, sh as i64], [sw as i64, dw as i64]);
    if int8 {
        g.constant_q8(&rn, &rows_dims, &op.rows, 0);
        g.constant_q8(&cn, &cols_dims, &op.cols_t(), 1);
    } else {
        g.constant_f32(&rn, &rows_dims, &op.rows);
        g.constant_f32(&cn, &cols_dims, &op.cols_t());
    }
    let wide = g.op("MatMul", &[x, &cn], &[]);
    g.op("MatMul", &[&rn, &wide], &[])
}

/// The package of `model` at `precision`, with `metrics` measured at export.
pub fn package(model: &TrainedModel, precision: Precision, metrics: Vec<(String, f64)>) -> Result<Package> {
    package_calibrated(model, precision, metrics, None)
}

/// [`package`], an `int8` one calibrated on `calibration` (default: the first good
/// training images of the folder the model was trained on).
pub fn package_calibrated(
    model: &TrainedModel,
    precision: Precision,
    metrics: Vec<(String, f64)>,
    calibration: Option<&[image::DynamicImage]>,
) -> Result<Package> {
    let ranges = match (precision, calibration) {
        (Precision::Int8, Some(images)) => Some(calibrate(model, images)?),
        (Precision::Int8, None) => Some(calibrate(model, &calibration_images(model)?)?),
        _ => None,
    };
    let onnx = graph(model, precision, ranges.as_ref())?;
    let t = &model.training;
    let manifest = Manifest {
        kind: model.head.name().into(),
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
            "{} good + {} defective images from {}, coreset {:?}, seed {}",
            t.images, t.defect_images, t.dataset, t.coreset_ratio, t.seed
        ),
        metrics,
        created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        onnx_sha256: String::new(),
    };
    Ok(Package::new(manifest, onnx))
}

/// The first [`CALIBRATION_IMAGES`] good training images (by name) of the folder the
/// model was trained on.
fn calibration_images(model: &TrainedModel) -> Result<Vec<image::DynamicImage>> {
    let root = Path::new(&model.training.dataset);
    let good = root.join("train").join("good");
    let dir = if good.is_dir() { good } else { root.to_path_buf() };
    let mut paths = crate::dataset::list_images(&dir)
        .with_context(|| format!("int8 calibration reads the training images in {}", dir.display()))?;
    paths.sort();
    paths.truncate(CALIBRATION_IMAGES);
    if paths.is_empty() {
        bail!("int8 calibration found no training images in {}", dir.display());
    }
    paths.iter().map(|p| crate::dataset::open_image(p)).collect()
}

/// Run the fp32 graph on `images` (per tile when tiled) and record the range of every
/// tensor an int8 graph quantises: the input of each quantisable convolution (their
/// outputs stay f32) and, for PatchCore, the centred patches.
pub fn calibrate(model: &TrainedModel, images: &[image::DynamicImage]) -> Result<Ranges> {
    use tract_onnx::prelude::*;
    let convs = GraphBuilder::extend(&model.backbone)
        .context("the model's backbone is not valid ONNX")?
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
    let plan = (|| -> TractResult<_> {
        let mut m = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(&onnx))?;
        m.set_input_fact(0, u8::fact([1, 3, h, w]).into())?;
        m.select_outputs_by_name(&names)?;
        m.into_optimized()?.into_runnable()
    })()
    .map_err(|e| anyhow::anyhow!("calibration graph: {e:#}"))?;
    let mut ranges = Ranges::new();
    for img in images {
        for (_, crop) in kensa_shared::tiling::crops(model.tiling, img) {
            let pixels: Vec<u8> = p.apply(&crop).iter().map(|&v| v as u8).collect();
            let input = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), pixels)?;
            let out = plan
                .run(tvec!(Tensor::from(input).into()))
                .map_err(|e| anyhow::anyhow!("calibration run: {e:#}"))?;
            for (name, t) in names.iter().zip(out.iter()) {
                let v = t.to_plain_array_view::<f32>().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                let r = ranges.entry(name.clone()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
                for &x in v.iter() {
                    r.0 = r.0.min(x);
                    r.1 = r.1.max(x);
                }
            }
        }
    }
    Ok(ranges)
}

/// `--precision` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// f32 weights and compute.
    Fp32,
    /// int8 weights (DequantizeLinear), f32 compute: ~4× smaller.
    Int8Weights,
    /// int8 convolutions (ConvInteger) and PatchCore bank product (MatMulInteger), calibrated on the training images.
    Int8,
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

/// How `kensa export` writes and checks a package.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Number format.
    pub precision: PrecisionArg,
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

/// Accuracy of a package on a test set, run by tract exactly as the box runs it.
pub fn measure(pkg: &Package, ds: &Dataset, on_error: OnError) -> Result<Metrics> {
    let runner = Runner::new(pkg, 1).context("loading the package graph in tract")?;
    Ok(eval::evaluate_package(&runner, ds, on_error)?.0)
}

/// Build the package; score it on `data` when given (metrics go into the manifest), and
/// refuse a quantised package that loses more than the allowed image AUROC.
pub fn run(model: &TrainedModel, data: Option<(&Dataset, &str)>, opts: &ExportOptions) -> Result<Package> {
    let precision = Precision::from(opts.precision);
    let mut pkg = package(model, precision, Vec::new())?;
    match data {
        Some((ds, name)) => {
            let got = measure(&pkg, ds, opts.on_error)?;
            let mut metrics =
                vec![("test_images".to_string(), (got.good_images + got.defective_images) as f64)];
            let named =
                [("image_auroc", got.image_auroc), ("pixel_auroc", got.pixel_auroc), ("aupro", got.aupro)];
            metrics.extend(named.iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))));
            if precision != Precision::Fp32 {
                let reference = measure(&package(model, Precision::Fp32, Vec::new())?, ds, opts.on_error)?;
                let (Some(fp32), Some(q)) = (reference.image_auroc, got.image_auroc) else {
                    if opts.accept_accuracy_drop {
                        tracing::warn!("{name} has no defective test images: accuracy not checked");
                        pkg.manifest.metrics = metrics;
                        return sign(pkg, opts);
                    }
                    bail!(
                        "{name} has no defective test images, so the {precision:?} package's accuracy cannot be \
                         checked; give --data with defects, or --accept-accuracy-drop"
                    );
                };
                metrics.push(("image_auroc_fp32".into(), fp32));
                let drop = 100.0 * (fp32 - q);
                if drop > opts.max_auroc_drop {
                    let msg = format!(
                        "the {precision:?} package loses {drop:.2} points of image AUROC on {name} (fp32 {fp32:.4} → \
                         {q:.4}; limit {:.2})",
                        opts.max_auroc_drop
                    );
                    if !opts.accept_accuracy_drop {
                        bail!(
                            "{msg}: not written. Use fp32, raise --max-auroc-drop, or --accept-accuracy-drop"
                        );
                    }
                    tracing::warn!("{msg}; written anyway (--accept-accuracy-drop)");
                }
            }
            pkg.manifest.metrics = metrics;
        }
        None if precision != Precision::Fp32 && !opts.accept_accuracy_drop => bail!(
            "checking the {precision:?} package's accuracy needs test images: give --data (the training \
             dataset is not available), or --accept-accuracy-drop to skip the check"
        ),
        None => {}
    }
    sign(pkg, opts)
}

/// A secret key written by `kensa keygen`.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading signing key {}", path.display()))?;
    let seed = parse_key_hex(&text)
        .map_err(|e| anyhow::anyhow!("signing key {} is not a kensa secret key: {e}", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// `kensa sign`: a detached signature of `file` (a firmware binary) as `<file>.sig`.
pub fn sign_file(file: &Path, key: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let sig = kensa_shared::package::Signature::detached(&read_signing_key(key)?, &bytes);
    let out = signature_path(file);
    std::fs::write(&out, sig.to_vec()).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// Where `kensa sign` puts the signature of `file`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn sign(mut pkg: Package, opts: &ExportOptions) -> Result<Package> {
    if let Some(path) = &opts.sign {
        pkg.sign(&read_signing_key(path)?);
    }
    Ok(pkg)
}

/// `kensa keygen`: `<stem>.key` (secret, owner-only) and `<stem>.pub`, as hex. Refuses to
/// overwrite a key.
pub fn keygen(stem: &Path) -> Result<(PathBuf, PathBuf)> {
    let secret = stem.with_extension("key");
    let public = stem.with_extension("pub");
    for p in [&secret, &public] {
        if p.exists() {
            bail!("{} exists; not overwriting a key", p.display());
        }
    }
    let mut seed = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut seed);
    let key = SigningKey::from_bytes(&seed);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&secret).with_context(|| format!("creating {}", secret.display()))?;
    std::io::Write::write_all(&mut f, format!("{}\n", key_hex(&seed)).as_bytes())?;
    std::fs::write(&public, format!("{}\n", key_hex(&key.verifying_key().to_bytes())))
        .with_context(|| format!("writing {}", public.display()))?;
    Ok((secret, public))
}
