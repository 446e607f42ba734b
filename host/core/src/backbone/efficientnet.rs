//! EfficientNet-Lite0, -Lite1 or -Lite2 as an ONNX graph, from a PyTorch state dict
//! (lukemelas naming).
//!
//! Lite0 is EfficientNet-B0 made edge-friendly: no squeeze-excitation, ReLU6 instead of
//! swish, fixed stem and head widths. Lite1 and Lite2 scale its depth and width; their
//! block table ([`Architecture`]) is read from the weights' shapes, with the strides of
//! B0's stages. BatchNorm is folded into the preceding convolution
//! (`w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`), ReLU6 is `Clip(0, 6)` and padding is
//! symmetric (`k/2` on every side), which is how these weights were trained.

use std::collections::HashMap;

use crate::error::{Error, Result, ensure, fail};
use tract_onnx::pb::tensor_proto::DataType;

use crate::onnx::{Attr, Dim, GraphBuilder};

/// BatchNorm epsilon the weights were trained with.
const BN_EPS: f32 = 1e-5;

/// Name of the graph input: f32 pixels in 0–255, NCHW, RGB.
pub const INPUT: &str = "image";
/// Name of the classifier output (1000 ImageNet logits).
pub const LOGITS: &str = "logits";

/// One MBConv block: `(kernel, stride, expand ratio, in, out)`.
pub type Block = (usize, usize, usize, usize, usize);

/// The 16 MBConv blocks of Lite0, in order.
const BLOCKS: [Block; 16] = [
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24),
    (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 40),
    (5, 1, 6, 40, 40),
    (3, 2, 6, 40, 80),
    (3, 1, 6, 80, 80),
    (3, 1, 6, 80, 80),
    (5, 1, 6, 80, 112),
    (5, 1, 6, 112, 112),
    (5, 1, 6, 112, 112),
    (5, 2, 6, 112, 192),
    (5, 1, 6, 192, 192),
    (5, 1, 6, 192, 192),
    (5, 1, 6, 192, 192),
    (3, 1, 6, 192, 320),
];

/// Stages (runs of blocks with one output width) whose first block halves the
/// resolution, in EfficientNet-B0's table; the Lite variants keep them.
const STRIDE_TWO_STAGES: [usize; 4] = [1, 2, 3, 5];

/// Stages whose last block is a default feature output: stride 8, and both widths at
/// stride 16 (blocks 4, 7 and 10 of Lite0).
const FEATURE_STAGES: [usize; 3] = [2, 3, 4];

/// The block table of one EfficientNet-Lite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architecture {
    /// MBConv blocks, in order.
    pub blocks: Vec<Block>,
    /// Channels of the stem convolution.
    pub stem: usize,
}

impl Architecture {
    /// EfficientNet-Lite0.
    pub fn lite0() -> Self {
        Self { blocks: BLOCKS.to_vec(), stem: 32 }
    }

    /// The table the weights in `w` were trained with, read from their shapes.
    pub fn from_weights(w: &Weights) -> Result<Self> {
        let shape = |name: &str| w.get(name).map(|(s, _)| s.clone());
        let need = |name: &str| {
            shape(name).ok_or_else(|| Error::Weights(format!("state dict has no tensor {name:?}")))
        };
        let stem = need("_conv_stem.weight")?[0];
        let mut blocks = Vec::new();
        let (mut stage, mut width) = (0usize, None);
        for i in 0.. {
            let Some(dw) = shape(&format!("_blocks.{i}._depthwise_conv.weight")) else { break };
            ensure!(dw.len() == 4 && dw[2] == dw[3], Weights, "block {i}: depthwise weight has shape {dw:?}");
            let (mid, k) = (dw[0], dw[2]);
            let cout = need(&format!("_blocks.{i}._project_conv.weight"))?[0];
            let cin = match shape(&format!("_blocks.{i}._expand_conv.weight")) {
                Some(e) => e[1],
                None => mid,
            };
            ensure!(
                cin > 0 && mid % cin == 0,
                Weights,
                "block {i}: {mid} channels are not a multiple of {cin}"
            );
            let first = width != Some(cout);
            if first && width.is_some() {
                stage += 1;
            }
            let stride = if first && STRIDE_TWO_STAGES.contains(&stage) { 2 } else { 1 };
            blocks.push((k, stride, mid / cin, cin, cout));
            width = Some(cout);
        }
        ensure!(
            !blocks.is_empty(),
            Weights,
            "state dict has no MBConv blocks (_blocks.0._depthwise_conv.weight)"
        );
        Ok(Self { blocks, stem })
    }

    /// Output stride (input pixels per feature cell) after block `i`.
    pub fn stride_after(&self, i: usize) -> usize {
        2 * self.blocks[..=i].iter().map(|b| b.1).product::<usize>()
    }

    /// The last block of each of [`FEATURE_STAGES`]: the default feature outputs.
    pub fn default_features(&self) -> Vec<usize> {
        let mut ends = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let last_of_stage = self.blocks.get(i + 1).is_none_or(|n| n.4 != b.4);
            if last_of_stage {
                ends.push(i);
            }
        }
        FEATURE_STAGES.iter().filter_map(|&s| ends.get(s).copied()).collect()
    }

    /// Which EfficientNet-Lite this is, by its depth and last width: graph name and title.
    pub fn name(&self) -> (String, String) {
        let known = |n: u8| (format!("efficientnet_lite{n}"), format!("EfficientNet-Lite{n}"));
        match (self.blocks.len(), self.blocks.last().map(|b| b.4)) {
            (16, Some(320)) => known(0),
            (21, Some(320)) => known(1),
            (21, Some(352)) => known(2),
            (n, c) => {
                let c = c.unwrap_or(0);
                ("efficientnet_lite".into(), format!("EfficientNet-Lite ({n} blocks, {c} channels)"))
            }
        }
    }
}

/// Output stride after block `i` of Lite0.
pub fn block_stride(i: usize) -> usize {
    Architecture::lite0().stride_after(i)
}

/// How input pixels are scaled before the first convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InputScaling {
    /// `(x − 127) / 128`, as the Lite models were trained.
    Symmetric,
    /// ImageNet mean/std per channel: `(x/255 − μ) / σ`.
    Imagenet,
}

/// Named f32 tensors of a state dict.
pub type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// What the built graph exposes.
#[derive(Debug, Clone)]
pub struct GraphSpec {
    /// Blocks whose outputs become graph outputs named `block<i>` (empty: the
    /// architecture's [`Architecture::default_features`]).
    pub feature_blocks: Vec<usize>,
    /// Include the classifier head and the `logits` output.
    pub with_logits: bool,
    /// Input scaling.
    pub scaling: InputScaling,
}

fn tensor<'a>(w: &'a Weights, name: &str, shape: &[usize]) -> Result<&'a [f32]> {
    let (s, data) =
        w.get(name).ok_or_else(|| Error::Weights(format!("state dict has no tensor {name:?}")))?;
    ensure!(s == shape, Weights, "tensor {name:?} has shape {s:?}, the architecture expects {shape:?}");
    Ok(data)
}

/// Conv (no bias) followed by BatchNorm, folded into one Conv with bias.
fn conv_bn(
    g: &mut GraphBuilder,
    w: &Weights,
    x: &str,
    conv: &str,
    bn: &str,
    (cin, cout, k, stride, group): (usize, usize, usize, usize, usize),
) -> Result<String> {
    let weight = tensor(w, &format!("{conv}.weight"), &[cout, cin / group, k, k])?;
    let gamma = tensor(w, &format!("{bn}.weight"), &[cout])?;
    let beta = tensor(w, &format!("{bn}.bias"), &[cout])?;
    let mean = tensor(w, &format!("{bn}.running_mean"), &[cout])?;
    let var = tensor(w, &format!("{bn}.running_var"), &[cout])?;
    let per_out = weight.len() / cout;
    let mut wf = Vec::with_capacity(weight.len());
    let mut bf = Vec::with_capacity(cout);
    for o in 0..cout {
        let scale = gamma[o] / (var[o] + BN_EPS).sqrt();
        wf.extend(weight[o * per_out..(o + 1) * per_out].iter().map(|v| v * scale));
        bf.push(beta[o] - mean[o] * scale);
    }
    let wn =
        g.constant_f32(&format!("{conv}.w"), &[cout as i64, (cin / group) as i64, k as i64, k as i64], &wf);
    let bn_ = g.constant_f32(&format!("{conv}.b"), &[cout as i64], &bf);
    let p = (k / 2) as i64;
    Ok(g.op(
        "Conv",
        &[x, &wn, &bn_],
        &[
            ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
            ("strides", Attr::Ints(vec![stride as i64, stride as i64])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
            ("group", Attr::Int(group as i64)),
        ],
    ))
}

fn relu6(g: &mut GraphBuilder, x: &str, zero: &str, six: &str) -> String {
    g.op("Clip", &[x, zero, six], &[])
}

/// Build the graph; returns ONNX bytes. One function on purpose: it walks the network
/// stem → 16 blocks → head in order, and each node it adds is named after the layer of
/// the state dict it comes from, so it reads against the paper's table top to bottom.
pub fn build(w: &Weights, spec: &GraphSpec, provenance: &str) -> Result<Vec<u8>> {
    let arch = Architecture::from_weights(w)?;
    let count = arch.blocks.len();
    if let Some(&b) = spec.feature_blocks.iter().find(|&&b| b >= count) {
        fail!(Invalid, "feature block {b} does not exist; these weights have blocks 0..{}", count - 1);
    }
    // No blocks asked for: the architecture's stage ends.
    let feature_blocks =
        if spec.feature_blocks.is_empty() { arch.default_features() } else { spec.feature_blocks.clone() };
    let last = if spec.with_logits { count - 1 } else { *feature_blocks.iter().max().expect("non-empty") };

    let (name, title) = arch.name();
    let mut g = GraphBuilder::new(&name);
    g.input(INPUT, DataType::Float, &[Dim::Named("N"), Dim::Fixed(3), Dim::Named("H"), Dim::Named("W")]);
    let zero = g.constant_f32("relu6.min", &[], &[0.0]);
    let six = g.constant_f32("relu6.max", &[], &[6.0]);

    let (offset, scale): ([f32; 3], [f32; 3]) = match spec.scaling {
        InputScaling::Symmetric => ([127.0; 3], [1.0 / 128.0; 3]),
        InputScaling::Imagenet => {
            let (m, s) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
            (m.map(|v| v * 255.0), [1.0 / (s[0] * 255.0), 1.0 / (s[1] * 255.0), 1.0 / (s[2] * 255.0)])
        }
    };
    let off = g.constant_f32("input.offset", &[1, 3, 1, 1], &offset);
    let sc = g.constant_f32("input.scale", &[1, 3, 1, 1], &scale);
    let x = g.op("Sub", &[INPUT, &off], &[]);
    let x = g.op("Mul", &[&x, &sc], &[]);

    let x = conv_bn(&mut g, w, &x, "_conv_stem", "_bn0", (3, arch.stem, 3, 2, 1))?;
    let mut x = relu6(&mut g, &x, &zero, &six);

    for (i, &(k, s, e, cin, cout)) in arch.blocks.iter().enumerate().take(last + 1) {
        let p = format!("_blocks.{i}");
        let mid = cin * e;
        let mut h = x.clone();
        if e != 1 {
            h = conv_bn(
                &mut g,
                w,
                &h,
                &format!("{p}._expand_conv"),
                &format!("{p}._bn0"),
                (cin, mid, 1, 1, 1),
            )?;
            h = relu6(&mut g, &h, &zero, &six);
        }
        h = conv_bn(
            &mut g,
            w,
            &h,
            &format!("{p}._depthwise_conv"),
            &format!("{p}._bn1"),
            (mid, mid, k, s, mid),
        )?;
        h = relu6(&mut g, &h, &zero, &six);
        h = conv_bn(
            &mut g,
            w,
            &h,
            &format!("{p}._project_conv"),
            &format!("{p}._bn2"),
            (mid, cout, 1, 1, 1),
        )?;
        if s == 1 && cin == cout {
            h = g.op("Add", &[&h, &x], &[]);
        }
        if feature_blocks.contains(&i) {
            let name = format!("block{i}");
            g.node("Identity", &[&h], &[&name], &[]);
            g.output(&name, DataType::Float, &[]);
        }
        x = h;
    }

    if spec.with_logits {
        let head_in = arch.blocks[count - 1].4;
        let h = conv_bn(&mut g, w, &x, "_conv_head", "_bn1", (head_in, 1280, 1, 1, 1))?;
        let h = relu6(&mut g, &h, &zero, &six);
        let h = g.op("GlobalAveragePool", &[&h], &[]);
        let h = g.op("Flatten", &[&h], &[("axis", Attr::Int(1))]);
        let fw = g.constant_f32("_fc.weight", &[1000, 1280], tensor(w, "_fc.weight", &[1000, 1280])?);
        let fb = g.constant_f32("_fc.bias", &[1000], tensor(w, "_fc.bias", &[1000])?);
        g.node("Gemm", &[&h, &fw, &fb], &[LOGITS], &[("transB", Attr::Int(1))]);
        g.output(LOGITS, DataType::Float, &[Dim::Named("N"), Dim::Fixed(1000)]);
    }

    let features = feature_blocks
        .iter()
        .map(|&b| format!("block{b}:{}", arch.stride_after(b)))
        .collect::<Vec<_>>()
        .join(",");
    Ok(g.finish(
        &format!("{title} (ImageNet), BatchNorm folded; input f32 RGB 0-255 NCHW"),
        &[
            ("kensa.backbone", name.clone()),
            ("kensa.features", features),
            ("kensa.scaling", format!("{:?}", spec.scaling).to_lowercase()),
            ("kensa.source", provenance.into()),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state dict with the shapes (not the values) of `arch`.
    fn shapes_of(arch: &Architecture) -> Weights {
        let mut w = Weights::new();
        let mut put = |name: String, shape: Vec<usize>| {
            w.insert(name, (shape, Vec::new()));
        };
        put("_conv_stem.weight".into(), vec![arch.stem, 3, 3, 3]);
        for (i, &(k, _, e, cin, cout)) in arch.blocks.iter().enumerate() {
            let mid = cin * e;
            if e != 1 {
                put(format!("_blocks.{i}._expand_conv.weight"), vec![mid, cin, 1, 1]);
            }
            put(format!("_blocks.{i}._depthwise_conv.weight"), vec![mid, 1, k, k]);
            put(format!("_blocks.{i}._project_conv.weight"), vec![cout, mid, 1, 1]);
        }
        w
    }

    #[test]
    fn the_block_table_is_read_back_from_the_weights() {
        let lite0 = Architecture::lite0();
        assert_eq!(Architecture::from_weights(&shapes_of(&lite0)).unwrap(), lite0);
        assert_eq!(lite0.default_features(), vec![4, 7, 10]);
        assert_eq!(lite0.name().1, "EfficientNet-Lite0");
        // A deeper, wider table (Lite2's shape: 1.2× depth, 1.1× width) keeps B0's strides.
        let mut deeper = Vec::new();
        let stages = [
            (3, 1, 1, 16, 1),
            (3, 2, 6, 24, 3),
            (5, 2, 6, 48, 3),
            (3, 2, 6, 88, 4),
            (5, 1, 6, 120, 4),
            (5, 2, 6, 208, 5),
            (3, 1, 6, 352, 1),
        ];
        let mut cin = 32;
        for (k, s, e, cout, n) in stages {
            for j in 0..n {
                deeper.push((k, if j == 0 { s } else { 1 }, if cin == 32 { 1 } else { e }, cin, cout));
                cin = cout;
            }
        }
        let arch = Architecture { blocks: deeper, stem: 32 };
        let read = Architecture::from_weights(&shapes_of(&arch)).unwrap();
        assert_eq!(read, arch);
        assert_eq!(read.default_features(), vec![6, 10, 14]);
        assert_eq!((read.stride_after(6), read.stride_after(14), read.stride_after(20)), (8, 16, 32));
    }

    #[test]
    fn strides_match_the_architecture() {
        assert_eq!(block_stride(0), 2);
        assert_eq!(block_stride(2), 4);
        assert_eq!(block_stride(4), 8);
        assert_eq!(block_stride(10), 16);
        assert_eq!(block_stride(15), 32);
    }
}
