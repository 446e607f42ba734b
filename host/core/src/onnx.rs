//! A small builder for ONNX graphs, over the protobuf types tract exposes.
//!
//! Used to write the backbone at import and, later, the complete scoring graph at export.
//! Only standard ONNX operators (default domain, opset 17) are emitted so the files load
//! in tract, onnxruntime and the ONNX checker alike.

use std::collections::HashMap;

use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension::Value as DimValue, type_proto,
};

/// Opset every graph is written against.
pub const OPSET: i64 = 17;

/// One dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size, e.g. the batch.
    Named(&'static str),
}

/// An attribute value for [`GraphBuilder::node`].
#[derive(Debug, Clone)]
pub enum Attr {
    /// Integer.
    Int(i64),
    /// Integer list.
    Ints(Vec<i64>),
    /// Float.
    Float(f32),
    /// String.
    Str(&'static str),
}

/// Accumulates nodes and initialisers; [`GraphBuilder::finish`] yields the model bytes.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
}

impl GraphBuilder {
    /// An empty graph with `name`.
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: name.into(), ..Default::default() }, counter: 0 }
    }

    /// Continue an existing graph (e.g. a backbone) with its inputs, nodes and
    /// initialisers; its outputs are dropped so the caller declares the new ones.
    pub fn extend(onnx: &[u8]) -> Result<Self, prost::DecodeError> {
        let model = ModelProto::decode(onnx)?;
        let mut graph = model.graph.unwrap_or_default();
        graph.output.clear();
        // Fresh names continue far above any the first graph could hold.
        Ok(Self { graph, counter: 1_000_000 })
    }

    /// Names of the graph inputs, in order.
    pub fn input_names(&self) -> Vec<String> {
        self.graph.input.iter().map(|i| i.name.clone()).collect()
    }

    /// Drop the graph input `name` (to feed it from a node instead).
    pub fn remove_input(&mut self, name: &str) {
        self.graph.input.retain(|i| i.name != name);
    }

    /// A name not used before, built from `prefix`.
    pub fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    /// Declare a graph input.
    pub fn input(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.graph.input.push(value_info(name, elem, dims));
    }

    /// Declare a graph output (`dims` may be empty to leave the shape to inference).
    pub fn output(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem, dims));
    }

    /// Add an f32 constant; returns its name.
    pub fn constant_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        assert_eq!(
            dims.iter().product::<i64>() as usize,
            data.len(),
            "initialiser {name}: shape/data mismatch"
        );
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, dims, DataType::Float, raw)
    }

    /// Add an i64 constant (shapes, axes); returns its name.
    pub fn constant_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, dims, DataType::Int64, raw)
    }

    /// Add an i32 constant (integer-domain offsets); returns its name.
    pub fn constant_i32(&mut self, name: &str, dims: &[i64], data: &[i32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, dims, DataType::Int32, raw)
    }

    /// Add a weight stored as int8 with one symmetric scale per index of `axis`, and a
    /// `DequantizeLinear` node that yields it as f32 under `name`. Returns the values a
    /// runtime will compute with (the dequantised ones), so callers can derive
    /// constants that must agree with them exactly.
    pub fn constant_q8(&mut self, name: &str, dims: &[i64], data: &[f32], axis: usize) -> Vec<f32> {
        let (q, scales) = quantize_symmetric(data, dims, axis);
        self.push_q8(name, dims, &q, &scales, axis);
        dequantize(&q, &scales, dims, axis)
    }

    fn push_q8(&mut self, name: &str, dims: &[i64], q: &[i8], scales: &[f32], axis: usize) {
        let n = scales.len() as i64;
        let qn = self.push_initializer(
            &format!("{name}.q"),
            dims,
            DataType::Int8,
            q.iter().map(|v| *v as u8).collect(),
        );
        let sn = self.constant_f32(&format!("{name}.scale"), &[n], scales);
        let zn = self.push_initializer(&format!("{name}.zero"), &[n], DataType::Int8, vec![0; scales.len()]);
        self.node("DequantizeLinear", &[&qn, &sn, &zn], &[name], &[("axis", Attr::Int(axis as i64))]);
    }

    /// Shrink every f32 initialiser with at least two dimensions (convolution and matrix
    /// weights): those with `min_fan_in` or more values per output channel become int8
    /// per output channel (axis 0) with `DequantizeLinear`; smaller kernels (stem,
    /// depthwise), where one scale per handful of values costs accuracy, become f16
    /// with a `Cast`. The new nodes go at the top of the graph. Returns how many
    /// initialisers went to int8.
    pub fn quantize_weights(&mut self, min_fan_in: usize) -> usize {
        let weights: Vec<TensorProto> = self
            .graph
            .initializer
            .iter()
            .filter(|t| t.data_type == DataType::Float as i32 && t.dims.len() >= 2)
            .cloned()
            .collect();
        let before = self.graph.node.len();
        let mut int8 = 0;
        for t in &weights {
            let data = f32_data(t);
            self.graph.initializer.retain(|i| i.name != t.name);
            if t.dims[1..].iter().product::<i64>() as usize >= min_fan_in {
                let (q, scales) = quantize_symmetric(&data, &t.dims, 0);
                self.push_q8(&t.name, &t.dims, &q, &scales, 0);
                int8 += 1;
            } else {
                let raw = data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
                let h = self.push_initializer(&format!("{}.f16", t.name), &t.dims, DataType::Float16, raw);
                self.node("Cast", &[&h], &[&t.name], &[("to", Attr::Int(DataType::Float as i64))]);
            }
        }
        // New nodes first, so the node list stays topologically sorted.
        let added: Vec<NodeProto> = self.graph.node.drain(before..).collect();
        self.graph.node.splice(0..0, added);
        int8
    }

    /// Convolutions whose weight is an initialiser with at least `min_fan_in` values per
    /// output channel: `(input, output)` tensor names, in graph order.
    pub fn quantizable_convs(&self, min_fan_in: usize) -> Vec<(String, String)> {
        self.graph
            .node
            .iter()
            .filter(|n| n.op_type == "Conv" && n.input.len() >= 2)
            .filter(|n| {
                self.initializer(&n.input[1]).is_some_and(|w| {
                    w.data_type == DataType::Float as i32
                        && w.dims.len() == 4
                        && w.dims[1..].iter().product::<i64>() as usize >= min_fan_in
                })
            })
            .map(|n| (n.input[0].clone(), n.output[0].clone()))
            .collect()
    }

    fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.graph.initializer.iter().find(|t| t.name == name)
    }

    /// Rewrite the convolutions of [`Self::quantizable_convs`] as integer convolutions:
    /// [`Self::quantize_u8`] (per tensor, scale from the observed `(min, max)` of the input
    /// in `ranges`) → `ConvInteger` (symmetric 8-bit weights per output channel, stored as
    /// u8 by [`offset_u8`]; exact int32 sums) → `Cast` → `Mul` by `s_x · s_w[c]` → `Add`
    /// of the f32 bias. The output stays f32: `QLinearConv` would requantise it to u8,
    /// which tract runs as four extra element-wise passes per convolution (scale, zero
    /// point, two clamps: half the int8 graph's time, docs/benchmarks.md) and which costs
    /// 8-bit rounding the next layer does not need. Convolutions without a range are left
    /// as they are. Returns how many were rewritten.
    pub fn quantize_convs(&mut self, ranges: &HashMap<String, (f32, f32)>, min_fan_in: usize) -> usize {
        let targets = self.quantizable_convs(min_fan_in);
        let nodes = std::mem::take(&mut self.graph.node);
        let mut rewritten = 0;
        for n in nodes {
            let target = n.op_type == "Conv"
                && targets.iter().any(|(x, y)| *x == n.input[0] && *y == n.output[0])
                && ranges.contains_key(&n.input[0]);
            if !target {
                self.graph.node.push(n);
                continue;
            }
            let (x, y) = (&n.input[0], &n.output[0]);
            let w = self.initializer(&n.input[1]).expect("checked").clone();
            let bias =
                n.input.get(2).filter(|b| !b.is_empty()).and_then(|b| self.initializer(b)).map(f32_data);
            let (sx, zx) = u8_params(ranges[x]);
            let (wq, ws) = quantize_symmetric(&f32_data(&w), &w.dims, 0);
            let out_ch = ws.len();
            let p = self.fresh(&format!("{}.q", w.name));
            let xz = self.constant_u8(&format!("{p}.x_zero"), &[], &[zx]);
            let wn = self.constant_u8(&format!("{p}.w"), &w.dims, &offset_u8(&wq));
            let wz = self.constant_u8(&format!("{p}.w_zero"), &[], &[WEIGHT_ZERO_U8]);
            let per_channel = [1, out_ch as i64, 1, 1];
            let scale: Vec<f32> = ws.iter().map(|s| s * sx).collect();
            let scale = self.constant_f32(&format!("{p}.scale"), &per_channel, &scale);
            let xq = self.quantize_u8(&p, x, sx, zx);
            let name = self.fresh("ConvInteger");
            let acc = format!("{p}.acc");
            self.graph.node.push(NodeProto {
                name,
                op_type: "ConvInteger".into(),
                input: [&xq, &wn, &xz, &wz].iter().map(|s| s.to_string()).collect(),
                output: vec![acc.clone()],
                attribute: n.attribute.clone(),
                ..Default::default()
            });
            let acc = self.op("Cast", &[&acc], &[("to", Attr::Int(DataType::Float as i64))]);
            match bias {
                Some(b) => {
                    let scaled = self.op("Mul", &[&acc, &scale], &[]);
                    let b = self.constant_f32(&format!("{p}.bias"), &per_channel, &b);
                    self.node("Add", &[&scaled, &b], &[y], &[]);
                }
                None => self.node("Mul", &[&acc, &scale], &[y], &[]),
            }
            rewritten += 1;
        }
        // Float weights no node reads any more.
        let used: std::collections::HashSet<&String> =
            self.graph.node.iter().flat_map(|n| &n.input).collect();
        let keep: Vec<bool> = self
            .graph
            .initializer
            .iter()
            .map(|t| t.data_type != DataType::Float as i32 || used.contains(&t.name))
            .collect();
        let mut k = keep.iter();
        self.graph.initializer.retain(|_| *k.next().expect("one flag per initialiser"));
        rewritten
    }

    /// A u8 initialiser holding `q` as is.
    pub fn constant_u8(&mut self, name: &str, dims: &[i64], q: &[u8]) -> String {
        self.push_initializer(name, dims, DataType::Uint8, q.to_vec())
    }

    fn push_initializer(&mut self, name: &str, dims: &[i64], ty: DataType, raw_data: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: ty as i32,
            raw_data,
            ..Default::default()
        });
        name.to_string()
    }

    /// Add a node computing `outputs` from `inputs`.
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) {
        let name = self.fresh(op);
        self.graph.node.push(NodeProto {
            name,
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
    }

    /// Add a node ahead of all others (to feed a former graph input), keeping the
    /// node list topologically sorted as the ONNX checker requires.
    pub fn node_first(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) {
        self.node(op, inputs, outputs, attrs);
        let n = self.graph.node.pop().expect("just added");
        self.graph.node.insert(0, n);
    }

    /// Add a single-output node with a fresh output name; returns that name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, inputs, &[&out], attrs);
        out
    }

    /// `x` (f32) as u8 with scale `s` and zero point `z`: `Cast(Clip(x · (1/s) + z + ½, 0,
    /// 255))`, which truncates to the nearest level (halves round up). The same numbers as
    /// `QuantizeLinear` but for exact halves, and tract runs the arithmetic as one fused
    /// vector pass where its `QuantizeLinear` is a scalar loop (13 of the int8 demo
    /// graph's 82 ms, docs/benchmarks.md). Returns the u8 tensor's name.
    pub fn quantize_u8(&mut self, prefix: &str, x: &str, s: f32, z: u8) -> String {
        let inv = self.constant_f32(&format!("{prefix}.inv_scale"), &[], &[1.0 / s]);
        let offset = self.constant_f32(&format!("{prefix}.offset"), &[], &[f32::from(z) + 0.5]);
        let lo = self.constant_f32(&format!("{prefix}.lo"), &[], &[0.0]);
        let hi = self.constant_f32(&format!("{prefix}.hi"), &[], &[255.0]);
        let scaled = self.op("Mul", &[x, &inv], &[]);
        let shifted = self.op("Add", &[&scaled, &offset], &[]);
        let clipped = self.op("Clip", &[&shifted, &lo, &hi], &[]);
        self.op("Cast", &[&clipped], &[("to", Attr::Int(DataType::Uint8 as i64))])
    }

    /// Serialise to ONNX bytes, recording `doc` and key/value metadata.
    pub fn finish(self, doc: &str, metadata: &[(&str, String)]) -> Vec<u8> {
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "kensa".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(self.graph),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto { key: k.to_string(), value: v.clone() })
                .collect(),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}

/// The f32 values of an initialiser, whether stored raw or as `float_data`.
fn f32_data(t: &TensorProto) -> Vec<f32> {
    if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }
}

/// Asymmetric u8 scale and zero point covering `(min, max)` (widened to include 0, so
/// zero padding is exact).
pub fn u8_params((lo, hi): (f32, f32)) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let s = ((hi - lo) / 255.0).max(1e-8);
    (s, (-lo / s).round().clamp(0.0, 255.0) as u8)
}

/// `(outer, channels, inner)` of `dims` split around `axis`.
fn split_dims(dims: &[i64], axis: usize) -> (usize, usize, usize) {
    let p = |d: &[i64]| d.iter().product::<i64>() as usize;
    (p(&dims[..axis]), dims[axis] as usize, p(&dims[axis + 1..]))
}

/// Symmetric int8 quantisation with one scale per index of `axis`: `q = round(x / s)`,
/// `s = max|x| / 127`, so zero stays exactly zero and −127..=127 is used.
pub fn quantize_symmetric(data: &[f32], dims: &[i64], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let (outer, channels, inner) = split_dims(dims, axis);
    assert_eq!(outer * channels * inner, data.len(), "shape {dims:?} does not fit {} values", data.len());
    let mut scales = vec![0.0f32; channels];
    for (i, v) in data.iter().enumerate() {
        let c = (i / inner) % channels;
        scales[c] = scales[c].max(v.abs());
    }
    for s in &mut scales {
        *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
    }
    let q = data
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[(i / inner) % channels]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// The zero point of weights stored by [`offset_u8`].
pub const WEIGHT_ZERO_U8: u8 = 128;

/// Symmetric int8 weights that an integer kernel multiplies with u8 activations
/// (`ConvInteger`, `MatMulInteger`), stored as u8 with zero point 128: the same values
/// and the same exact int32 sums. As int8 they would meet x86's u8 × s8 instruction
/// (`vpmaddubsw`), which adds pairs of products into a saturating i16 (2 · 255 · 127 =
/// 64 770 > 32 767): onnxruntime uses it on CPUs without VNNI, and an AVX2-only machine
/// then scored an int8 package differently from tract and from ARM. Runtimes multiply
/// u8 × u8 through 16-bit widening, which cannot saturate, and keep all 8 bits (7-bit
/// weights would avoid the overflow too, but doubled the map's error against fp32).
pub fn offset_u8(q: &[i8]) -> Vec<u8> {
    q.iter().map(|&v| (i16::from(v) + i16::from(WEIGHT_ZERO_U8)) as u8).collect()
}

/// What `DequantizeLinear` computes from [`quantize_symmetric`]'s output.
pub fn dequantize(q: &[i8], scales: &[f32], dims: &[i64], axis: usize) -> Vec<f32> {
    let (_, channels, inner) = split_dims(dims, axis);
    q.iter().enumerate().map(|(i, v)| *v as f32 * scales[(i / inner) % channels]).collect()
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let shape = (!dims.is_empty()).then(|| pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                denotation: String::new(),
                value: Some(match d {
                    Dim::Fixed(n) => DimValue::DimValue(*n),
                    Dim::Named(s) => DimValue::DimParam(s.to_string()),
                }),
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: elem as i32, shape })),
        }),
        ..Default::default()
    }
}

fn attribute(name: &str, a: &Attr) -> AttributeProto {
    let mut p = AttributeProto { name: name.into(), ..Default::default() };
    match a {
        Attr::Int(i) => {
            p.r#type = AttributeType::Int as i32;
            p.i = *i;
        }
        Attr::Ints(v) => {
            p.r#type = AttributeType::Ints as i32;
            p.ints = v.clone();
        }
        Attr::Float(f) => {
            p.r#type = AttributeType::Float as i32;
            p.f = *f;
        }
        Attr::Str(v) => {
            p.r#type = AttributeType::String as i32;
            p.s = v.as_bytes().to_vec();
        }
    }
    p
}
