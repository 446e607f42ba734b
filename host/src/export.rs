//! `kensa export`: a trained model as one package the box and any ONNX runtime can run.
//!
//! The graph does everything after resizing, with standard operators only:
//!
//! ```text
//! pixels u8 [1,3,H,W] → Cast → backbone → AveragePool 3×3 (count_include_pad) per feature
//!   → Resize (linear, asymmetric) to the finest grid → Concat → [h·w, C]
//!   → PatchCore: |x|² − 2·x·Bᵀ + |b|² (MatMul) → ReduceMin → Relu → Sqrt → [1,1,h,w]
//!   → Resize to [H,W] → Slice+Pad(edge) (cell offset) → Pad(reflect)+Conv ×2 (Gaussian)
//!   → anomaly_map [1,1,H,W] → TopK → ReduceMean → score [1]
//! ```
//!
//! Each step is the exact twin of the training-time code in `anomaly::{embed, map,
//! patchcore}`, which the parity test checks number by number.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kensa_shared::package::{INPUT, MAP_OUTPUT, Manifest, Package, Precision, SCORE_OUTPUT};
use tract_onnx::pb::tensor_proto::DataType;

use crate::anomaly::{embed::POOL, map};
use crate::backbone::Backbone;
use crate::model::{Head, TrainedModel};
use crate::onnx::{Attr, Dim, GraphBuilder};

/// The scoring graph of `model` (ONNX bytes).
pub fn graph(model: &TrainedModel) -> Result<Vec<u8>> {
    let pc = match &model.head {
        Head::PatchCore(pc) => pc,
        Head::Padim(_) => bail!("exporting PaDiM models is not supported yet; train with --method patchcore"),
    };
    let p = model.preprocess;
    let (h, w) = (p.height as i64, p.width as i64);
    let info = Backbone::load(&model.backbone, &model.features, h as usize, w as usize, 1)
        .context("loading the model's backbone")?
        .features;
    let mut g = GraphBuilder::extend(&model.backbone).context("the model's backbone is not valid ONNX")?;
    let backbone_input = g.input_names().into_iter().next().context("the backbone has no input")?;
    g.remove_input(&backbone_input);
    g.input(INPUT, DataType::Uint8, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)]);
    g.node("Cast", &[INPUT], &[&backbone_input], &[("to", Attr::Int(DataType::Float as i64))]);

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
            resize(&mut g, &pooled, [1, f.channels as i64, gh, gw])
        });
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let cat = g.op("Concat", &refs, &[("axis", Attr::Int(1))]);
    let dim = pc.dim as i64;
    let nhwc = g.op("Transpose", &[&cat], &[("perm", Attr::Ints(vec![0, 2, 3, 1]))]);
    let shape = g.constant_i64("patches.shape", &[2], &[gh * gw, dim]);
    let x = g.op("Reshape", &[&nhwc, &shape], &[]);

    // Nearest neighbour: d² = |x|² − 2 x·Bᵀ + |b|², min over the bank.
    let rows = pc.rows();
    let mut bt = vec![0.0f32; pc.dim * rows];
    let mut bb = vec![0.0f32; rows];
    for (j, row) in pc.bank.chunks_exact(pc.dim).enumerate() {
        for (c, v) in row.iter().enumerate() {
            bt[c * rows + j] = -2.0 * v;
        }
        bb[j] = row.iter().map(|v| v * v).sum();
    }
    let bt = g.constant_f32("bank.minus2_t", &[dim, rows as i64], &bt);
    let bb = g.constant_f32("bank.sq_norm", &[1, rows as i64], &bb);
    let xx = g.op("ReduceSumSquare", &[&x], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))]);
    let dots = g.op("MatMul", &[&x, &bt], &[]);
    let d2 = g.op("Add", &[&dots, &bb], &[]);
    let d2 = g.op("Add", &[&d2, &xx], &[]);
    let d2 = g.op("ReduceMin", &[&d2], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]);
    let d2 = g.op("Relu", &[&d2], &[]);
    let d = g.op("Sqrt", &[&d2], &[]);
    let grid_shape = g.constant_i64("grid.shape", &[4], &[1, 1, gh, gw]);
    let grid = g.op("Reshape", &[&d, &grid_shape], &[]);

    // Map: upsample, correct the cell offset, blur.
    let up = resize(&mut g, &grid, [1, 1, h, w]);
    let o = map::CELL_OFFSET as i64;
    let starts = g.constant_i64("shift.starts", &[2], &[o, o]);
    let ends = g.constant_i64("shift.ends", &[2], &[h, w]);
    let axes = g.constant_i64("shift.axes", &[2], &[2, 3]);
    let cut = g.op("Slice", &[&up, &starts, &ends, &axes], &[]);
    let pads = g.constant_i64("shift.pads", &[8], &[0, 0, 0, 0, 0, 0, o, o]);
    let shifted = g.op("Pad", &[&cut, &pads], &[("mode", Attr::Str("edge"))]);
    let taps = map::gaussian_taps(map::SIGMA);
    let k = taps.len() as i64;
    let r = k / 2;
    let pad_x = g.constant_i64("blur.pad_x", &[8], &[0, 0, 0, r, 0, 0, 0, r]);
    let px = g.op("Pad", &[&shifted, &pad_x], &[("mode", Attr::Str("reflect"))]);
    let kx = g.constant_f32("blur.kx", &[1, 1, 1, k], &taps);
    let bx = g.op("Conv", &[&px, &kx], &[]);
    let pad_y = g.constant_i64("blur.pad_y", &[8], &[0, 0, r, 0, 0, 0, r, 0]);
    let py = g.op("Pad", &[&bx, &pad_y], &[("mode", Attr::Str("reflect"))]);
    let ky = g.constant_f32("blur.ky", &[1, 1, k, 1], &taps);
    g.node("Conv", &[&py, &ky], &[MAP_OUTPUT], &[]);

    // Score: mean of the top share of the map.
    let n = h * w;
    let top = map::top_count(model.score_top_share, n as usize) as i64;
    let flat_shape = g.constant_i64("score.flat", &[2], &[1, n]);
    let flat = g.op("Reshape", &[MAP_OUTPUT, &flat_shape], &[]);
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

/// `Resize` of `x` to `sizes`, bilinear with asymmetric coordinates (as `embed::resize_plane`).
fn resize(g: &mut GraphBuilder, x: &str, sizes: [i64; 4]) -> String {
    let name = g.fresh("resize.sizes");
    let sizes = g.constant_i64(&name, &[4], &sizes);
    g.op(
        "Resize",
        &[x, "", "", &sizes],
        &[("mode", Attr::Str("linear")), ("coordinate_transformation_mode", Attr::Str("asymmetric"))],
    )
}

/// The package of `model`, with `metrics` measured at export.
pub fn package(model: &TrainedModel, metrics: Vec<(String, f64)>) -> Result<Package> {
    let onnx = graph(model)?;
    let t = &model.training;
    let manifest = Manifest {
        kind: model.head.name().into(),
        preprocess: model.preprocess,
        tiling: model.tiling,
        threshold: model.threshold.value,
        threshold_rule: model.threshold.rule.to_string(),
        score: format!("mean of the highest {:.1} % of the anomaly map", 100.0 * model.score_top_share),
        precision: Precision::Fp32,
        training: format!(
            "{} good images from {}, coreset {:?}, seed {}",
            t.images, t.dataset, t.coreset_ratio, t.seed
        ),
        metrics,
        created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        onnx_sha256: String::new(),
    };
    Ok(Package::new(manifest, onnx))
}
