//! EfficientNet-Lite0 as an ONNX graph, from a PyTorch state dict (lukemelas naming).
//!
//! Lite0 is EfficientNet-B0 made edge-friendly: no squeeze-excitation, ReLU6 instead of
//! swish, fixed stem and head widths. BatchNorm is folded into the preceding convolution
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

/// `(kernel, stride, expand ratio, in, out)` of the 16 MBConv blocks, in order.
const BLOCKS: [(usize, usize, usize, usize, usize); 16] = [
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

/// Output stride (input pixels per feature cell) after block `i`.
pub fn block_stride(i: usize) -> usize {
    2 * BLOCKS[..=i].iter().map(|b| b.1).product::<usize>()
}

/// Number of MBConv blocks.
pub const BLOCK_COUNT: usize = BLOCKS.len();

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
    /// Blocks whose outputs become graph outputs named `block<i>`.
    pub feature_blocks: Vec<usize>,
    /// Include the classifier head and the `logits` output.
    pub with_logits: bool,
    /// Input scaling.
    pub scaling: InputScaling,
}

fn tensor<'a>(w: &'a Weights, name: &str, shape: &[usize]) -> Result<&'a [f32]> {
    let (s, data) =
        w.get(name).ok_or_else(|| Error::Weights(format!("state dict has no tensor {name:?}")))?;
    ensure!(s == shape, Weights, "tensor {name:?} has shape {s:?}, EfficientNet-Lite0 expects {shape:?}");
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
    if let Some(&b) = spec.feature_blocks.iter().find(|&&b| b >= BLOCK_COUNT) {
        fail!(
            Invalid,
            "feature block {b} does not exist; EfficientNet-Lite0 has blocks 0..{}",
            BLOCK_COUNT - 1
        );
    }
    if spec.feature_blocks.is_empty() && !spec.with_logits {
        fail!(Invalid, "the graph would have no outputs: choose feature blocks or the logits");
    }
    let last = if spec.with_logits {
        BLOCK_COUNT - 1
    } else {
        *spec.feature_blocks.iter().max().expect("non-empty")
    };

    let mut g = GraphBuilder::new("efficientnet_lite0");
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

    let x = conv_bn(&mut g, w, &x, "_conv_stem", "_bn0", (3, 32, 3, 2, 1))?;
    let mut x = relu6(&mut g, &x, &zero, &six);

    for (i, &(k, s, e, cin, cout)) in BLOCKS.iter().enumerate().take(last + 1) {
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
        if spec.feature_blocks.contains(&i) {
            let name = format!("block{i}");
            g.node("Identity", &[&h], &[&name], &[]);
            g.output(&name, DataType::Float, &[]);
        }
        x = h;
    }

    if spec.with_logits {
        let h = conv_bn(&mut g, w, &x, "_conv_head", "_bn1", (320, 1280, 1, 1, 1))?;
        let h = relu6(&mut g, &h, &zero, &six);
        let h = g.op("GlobalAveragePool", &[&h], &[]);
        let h = g.op("Flatten", &[&h], &[("axis", Attr::Int(1))]);
        let fw = g.constant_f32("_fc.weight", &[1000, 1280], tensor(w, "_fc.weight", &[1000, 1280])?);
        let fb = g.constant_f32("_fc.bias", &[1000], tensor(w, "_fc.bias", &[1000])?);
        g.node("Gemm", &[&h, &fw, &fb], &[LOGITS], &[("transB", Attr::Int(1))]);
        g.output(LOGITS, DataType::Float, &[Dim::Named("N"), Dim::Fixed(1000)]);
    }

    let features = spec
        .feature_blocks
        .iter()
        .map(|&b| format!("block{b}:{}", block_stride(b)))
        .collect::<Vec<_>>()
        .join(",");
    Ok(g.finish(
        "EfficientNet-Lite0 (ImageNet), BatchNorm folded; input f32 RGB 0-255 NCHW",
        &[
            ("kensa.backbone", "efficientnet_lite0".into()),
            ("kensa.features", features),
            ("kensa.scaling", format!("{:?}", spec.scaling).to_lowercase()),
            ("kensa.source", provenance.into()),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_match_the_architecture() {
        assert_eq!(block_stride(0), 2);
        assert_eq!(block_stride(2), 4);
        assert_eq!(block_stride(4), 8);
        assert_eq!(block_stride(10), 16);
        assert_eq!(block_stride(15), 32);
    }
}
