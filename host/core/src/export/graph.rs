//! The scoring graph: the model's backbone extended with embedding, head, map and score,
//! in standard ONNX operators (the pipeline is drawn in [`super`]).

use kensa_shared::package::{INPUT, MAP_OUTPUT, Precision, SCORE_OUTPUT};
use tract_onnx::pb::tensor_proto::DataType;

use crate::backbone;
use crate::embed::{POOL, resize_plane};
use crate::error::{Error, Result, fail};
use crate::heads::{Affine, Classifier, Head, Padim, PatchCore};
use crate::map::{self, Separable};
use crate::model::TrainedModel;
use crate::onnx::{
    Attr, Dim, GraphBuilder, WEIGHT_ZERO_U8, dequantize, offset_u8, quantize_symmetric, u8_params,
};

/// Weights with a smaller fan-in per output channel are stored as f16, not int8, in an
/// int8-weights graph: with the stem and depthwise kernels (9–27 values per channel) in
/// int8, a good part's map moved by 13 % of its peak on the parity test's model; as f16,
/// by under 3 %.
pub(super) const MIN_QUANTIZED_FAN_IN: usize = 32;

/// Observed `(min, max)` of graph tensors, by name: the activation ranges an `int8`
/// graph is quantised with.
pub type Ranges = std::collections::HashMap<String, (f32, f32)>;

/// The scoring graph of `model` (ONNX bytes) at `precision`; `Int8` needs the activation
/// `ranges` ([`super::calibrate`]). Long on purpose: it is the pipeline drawn in
/// [`super`], step by step in that order, so a reader checks one against the other.
pub fn graph(model: &TrainedModel, precision: Precision, ranges: Option<&Ranges>) -> Result<Vec<u8>> {
    let p = model.preprocess;
    let (h, w) = (p.height as i64, p.width as i64);
    let info = backbone::feature_shapes(&model.backbone, &model.features, h as usize, w as usize)
        .map_err(|e| Error::Inference { context: "loading the model's backbone".into(), source: e.into() })?;
    let mut g = GraphBuilder::extend(&model.backbone)
        .map_err(|source| Error::Onnx { context: "the model's backbone is not valid ONNX", source })?;
    match precision {
        Precision::Fp32 => {}
        Precision::Int8Weights => {
            g.quantize_weights(MIN_QUANTIZED_FAN_IN);
        }
        Precision::Int8 => {
            let Some(ranges) = ranges else {
                fail!(Invalid, "an int8 graph needs calibrated activation ranges");
            };
            let n = g.quantize_convs(ranges, MIN_QUANTIZED_FAN_IN);
            tracing::info!("{n} convolutions quantised to ConvInteger");
            // The convolutions left in float (stem, depthwise) keep int8 storage.
            g.quantize_weights(MIN_QUANTIZED_FAN_IN);
        }
    }
    let Some(backbone_input) = g.input_names().into_iter().next() else {
        fail!(Invalid, "the backbone has no input");
    };
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

/// The PatchCore head's patches, centred on the bank mean (observed by [`super::calibrate`]).
pub(super) const CENTRED: &str = "patches.centred";

/// Bank rows per product in the PatchCore head (see [`patchcore_head`]).
const BANK_CHUNK: usize = 768;

/// PatchCore head: `[P, dim]` patches → `[P]` distance to the nearest bank row. Long on
/// purpose: the f32 and integer variants of the same formula sit side by side, so the
/// twin of each step is in view.
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
    // symmetric 8-bit per slice (stored as u8, `onnx::offset_u8`), multiplied by
    // MatMulInteger (exact int32 sums), the minimum taken on the integers
    // (`integer_minimum`). 8-bit *outputs* (QLinearMatMul) would not do: a squared
    // distance is a small difference of large terms.
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
        if let Some((xq, sx, xz, bz)) = &quantised_x {
            minima.push(integer_minimum(g, ci, &bt_name, &bt, &bt_dims, (xq, *sx, xz, bz)));
            continue;
        }
        let bt = match precision {
            Precision::Fp32 => {
                g.constant_f32(&bt_name, &bt_dims, &bt);
                bt
            }
            Precision::Int8Weights | Precision::Int8 => g.constant_q8(&bt_name, &bt_dims, &bt, 1),
        };
        let dots = g.op("MatMul", &[&x, &bt_name], &[]);
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

/// int8: `min_j(|b_j|² − 2 x·b_j)` over one bank slice, taken on the integers. The slice
/// has one symmetric scale (not one per row), so every product shares the unit
/// `s_x · s_b`; `|b_j|²` (from the dequantised rows, so it stays a true squared distance)
/// is rounded to that unit and added as an int32 bias, `ReduceMin` runs on the int32
/// sums, and only the `[P, 1]` minima are cast to f32 and scaled. Dequantising the whole
/// `[P, n]` product first cost a cast and a multiply per element: in tract that made the
/// int8 graph slower than f32 (docs/benchmarks.md). The rounding is half a unit, far
/// below a distance's own 8-bit error.
fn integer_minimum(
    g: &mut GraphBuilder,
    ci: usize,
    name: &str,
    bt: &[f32],
    dims: &[i64; 2],
    (xq, sx, xz, bz): (&str, f32, &str, &str),
) -> String {
    let n = dims[1] as usize;
    let flat = [1, bt.len() as i64];
    let (q, scale) = quantize_symmetric(bt, &flat, 0);
    let unit = f64::from(scale[0] * sx);
    let qn = g.constant_u8(name, dims, &offset_u8(&q));
    let dots = g.op("MatMulInteger", &[xq, &qn, xz, bz], &[]);
    let mut bb = vec![0.0f64; n];
    for (i, v) in dequantize(&q, &scale, &flat, 0).iter().enumerate() {
        bb[i % n] += 0.25 * f64::from(*v) * f64::from(*v);
    }
    let bb: Vec<i32> = bb
        .iter()
        .map(|b| (b / unit).round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32)
        .collect();
    let bb = g.constant_i32(&format!("bank.{ci}.sq_norm"), &[1, n as i64], &bb);
    let d2 = g.op("Add", &[&dots, &bb], &[]);
    let m = g.op("ReduceMin", &[&d2], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))]);
    let m = g.op("Cast", &[&m], &[("to", Attr::Int(DataType::Float as i64))]);
    let unit = g.constant_f32(&format!("bank.{ci}.unit"), &[], &[unit as f32]);
    g.op("Mul", &[&m, &unit], &[])
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
