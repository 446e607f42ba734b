//! Where an int8 package's integer products run: on tract's integer kernels, or as the
//! same products in f32 on CPUs whose integer kernel is slower than its f32 one.
//!
//! An int8 package multiplies u8 activations by 8-bit weights (`ConvInteger`,
//! `MatMulInteger`, exact int32 sums). tract runs these on integer dot-product kernels
//! where the CPU has them (AVX-512 VNNI / AVX-VNNI on x86-64; NEON on aarch64). On an
//! x86-64 CPU with AVX2 only, its one integer kernel widens every byte to 16 bits and does
//! about a quarter of an f32 kernel's multiply-adds per cycle: the int8 demo package ran
//! 1.5× slower than the fp32 one (docs/benchmarks.md). There the runner computes the very
//! same products in f32: activations and weights are small integers (|a| ≤ 255, |w| ≤ 255),
//! so an f32 product of them is the int32 sum exactly while partial sums stay below 2²⁴ and
//! within float rounding beyond; the rest of the graph is untouched, so scores and maps are
//! the graph's.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{self, tensor_proto::DataType};

/// How a package's integer products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegerProducts {
    /// On tract's integer kernels, as the graph says.
    Integer,
    /// As f32 products of the same integers (CPUs without integer dot products).
    Float,
}

impl IntegerProducts {
    /// The faster way on this CPU, as tract sees it (so `TRACT_CPU_ISA` applies).
    pub fn for_this_cpu() -> Self {
        Self::for_isa(tract_linalg::isa::native())
    }

    /// The faster way on a CPU with instruction set `isa`: f32 on x86-64 without an integer
    /// dot product (VNNI in either encoding, or AMX), integer everywhere else. aarch64
    /// keeps the integer kernels: integer dot products are what the box's int8 flavour is for.
    pub fn for_isa(isa: tract_linalg::isa::IsaSet) -> Self {
        use tract_linalg::isa::{Arch, Isa};
        let dot_product = [Isa::X86_64Avx512Vnni, Isa::X86_64AvxVnni, Isa::X86_64AmxInt8];
        if isa.arch() == Some(Arch::X86_64) && !dot_product.iter().any(|&i| isa.has(i)) {
            Self::Float
        } else {
            Self::Integer
        }
    }

    /// A word for logs and diagnostics.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Integer => "integer kernels",
            Self::Float => "f32 kernels (this CPU has no integer dot product)",
        }
    }
}

/// Why a graph's integer products were left as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoweringError {
    /// An input of an integer product is not of the kind this rewrite handles.
    #[error("integer product {node}: {why}")]
    Unsupported {
        /// The node's name.
        node: String,
        /// What is not supported.
        why: String,
    },
}

/// Rewrite every `ConvInteger` / `MatMulInteger` of `graph` as `Conv` / `MatMul` on f32
/// operands holding the same integers, with the int32 arithmetic that follows them
/// (`Add` of an int32 bias, `ReduceMin`, … up to the `Cast` to float) carried out in f32.
/// Weights must be initialisers with a scalar (or no) zero point. Returns how many
/// products were rewritten; on an error `graph` is unchanged.
pub fn lower_to_float(graph: &mut pb::GraphProto) -> Result<usize, LoweringError> {
    let (nodes, new_inits, rewritten) = lower(graph)?;
    graph.node = nodes;
    graph.initializer.extend(new_inits);
    // Initialisers no node reads any more (the 8-bit weights).
    let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    Ok(rewritten)
}

/// The rewritten node list, the initialisers it adds and how many products it rewrote.
fn lower(g: &pb::GraphProto) -> Result<(Vec<pb::NodeProto>, Vec<pb::TensorProto>, usize), LoweringError> {
    let inits: HashMap<&str, &pb::TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut fresh = 0usize;
    let mut name = |base: &str| {
        fresh += 1;
        format!("{base}.f32.{fresh}")
    };
    let mut nodes = Vec::with_capacity(g.node.len());
    let mut new_inits = Vec::new();
    // Tensors that were int32 and are now f32.
    let mut widened: HashSet<String> = HashSet::new();
    let mut rewritten = 0;
    for n in g.node.iter().cloned() {
        let node_name = n.name.clone();
        let fail = |why: &str| LoweringError::Unsupported { node: node_name.clone(), why: why.into() };
        match n.op_type.as_str() {
            "ConvInteger" | "MatMulInteger" => {
                let (a, b) = (&n.input[0], &n.input[1]);
                let zero = |i: usize| -> Result<f32, LoweringError> {
                    match n.input.get(i).filter(|s| !s.is_empty()) {
                        None => Ok(0.0),
                        Some(z) => {
                            let t = inits
                                .get(z.as_str())
                                .ok_or_else(|| fail("a zero point is not a constant"))?;
                            let v = integers(t).ok_or_else(|| fail("a zero point is not 8-bit"))?;
                            match v.as_slice() {
                                [z] => Ok(*z),
                                _ => Err(fail("a zero point is not a scalar")),
                            }
                        }
                    }
                };
                let (za, zb) = (zero(2)?, zero(3)?);
                let w = inits.get(b.as_str()).ok_or_else(|| fail("the weights are not a constant"))?;
                let wv = integers(w).ok_or_else(|| fail("the weights are not 8-bit"))?;
                let wf = name(b);
                new_inits.push(f32_tensor(&wf, &w.dims, wv.iter().map(|v| v - zb).collect()));
                let af = float_activation(a, za, &mut nodes, &mut new_inits, &mut name);
                let op = if n.op_type == "ConvInteger" { "Conv" } else { "MatMul" };
                let attrs = if op == "Conv" { n.attribute.clone() } else { vec![] };
                nodes.push(pb::NodeProto {
                    name: n.name.clone(),
                    ..node(op, &[&af, &wf], &n.output[0], attrs)
                });
                widened.insert(n.output[0].clone());
                rewritten += 1;
            }
            _ if n.input.iter().any(|i| widened.contains(i)) => match n.op_type.as_str() {
                // The one exit: the graph's own conversion to float, now a no-op.
                "Cast" if cast_target(&n) == Some(DataType::Float) => nodes.push(n),
                "Add" | "Sub" | "Mul" | "Min" | "Max" | "ReduceMin" | "ReduceMax" | "Concat" | "Relu" => {
                    let mut n = n;
                    for i in &mut n.input {
                        if widened.contains(i) {
                            continue;
                        }
                        match inits.get(i.as_str()) {
                            Some(t) if t.data_type == DataType::Int32 as i32 => {
                                let f = name(i);
                                let v = int32s(t).iter().map(|&v| v as f32).collect();
                                new_inits.push(f32_tensor(&f, &t.dims, v));
                                *i = f;
                            }
                            // A reduction's axes.
                            Some(t)
                                if t.data_type == DataType::Int64 as i32
                                    && n.op_type.starts_with("Reduce") => {}
                            _ => {
                                return Err(fail(&format!("{} mixes the int32 product with {i}", n.op_type)));
                            }
                        }
                    }
                    widened.extend(n.output.iter().cloned());
                    nodes.push(n);
                }
                other => {
                    return Err(fail(&format!("its int32 result feeds {other}, which is not rewritten")));
                }
            },
            _ => nodes.push(n),
        }
    }
    Ok((nodes, new_inits, rewritten))
}

/// The activation `a` (u8) of an integer product as f32, less its zero point `za`: a
/// `Cast` and a `Sub`, which are exact. (The floor of the f32 value the exporter casts to
/// u8 would skip the u8, but tract's `Floor` is a slower pass than the two casts, and the
/// rounding trick `(t + 2²³) − 2²³` did not survive its optimiser: other numbers.)
fn float_activation(
    a: &str,
    za: f32,
    nodes: &mut Vec<pb::NodeProto>,
    new_inits: &mut Vec<pb::TensorProto>,
    name: &mut impl FnMut(&str) -> String,
) -> String {
    let cast = name(a);
    nodes.push(node("Cast", &[a], &cast, vec![to_float()]));
    if za == 0.0 {
        return cast;
    }
    let zero = name(&format!("{a}.zero"));
    new_inits.push(f32_tensor(&zero, &[], vec![za]));
    let out = name(a);
    nodes.push(node("Sub", &[&cast, &zero], &out, vec![]));
    out
}

fn cast_target(n: &pb::NodeProto) -> Option<DataType> {
    n.attribute.iter().find(|a| a.name == "to").and_then(|a| DataType::try_from(a.i as i32).ok())
}

fn to_float() -> pb::AttributeProto {
    pb::AttributeProto {
        name: "to".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: DataType::Float as i64,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: format!("{output}.node"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        attribute,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], values: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// The values of a u8 or i8 initialiser as f32, `None` for any other type.
fn integers(t: &pb::TensorProto) -> Option<Vec<f32>> {
    let raw = |f: fn(u8) -> f32| -> Vec<f32> {
        if t.raw_data.is_empty() {
            t.int32_data.iter().map(|&v| f(v as u8)).collect()
        } else {
            t.raw_data.iter().map(|&b| f(b)).collect()
        }
    };
    match DataType::try_from(t.data_type).ok()? {
        DataType::Uint8 => Some(raw(f32::from)),
        DataType::Int8 => Some(raw(|b| f32::from(b as i8))),
        _ => None,
    }
}

fn int32s(t: &pb::TensorProto) -> Vec<i32> {
    if t.raw_data.is_empty() {
        t.int32_data.clone()
    } else {
        t.raw_data.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::isa::{Arch, Isa, IsaSet};

    #[test]
    fn only_x86_64_without_an_integer_dot_product_runs_integer_products_as_f32() {
        let x86 =
            IsaSet::of_arch(Arch::X86_64).with(Isa::X86_64Avx).with(Isa::X86_64Avx2).with(Isa::X86_64Fma);
        assert_eq!(IntegerProducts::for_isa(x86), IntegerProducts::Float);
        let vnni = x86.with(Isa::X86_64Avx512f).with(Isa::X86_64Avx512Vnni);
        assert_eq!(IntegerProducts::for_isa(vnni), IntegerProducts::Integer);
        assert_eq!(IntegerProducts::for_isa(x86.with(Isa::X86_64AvxVnni)), IntegerProducts::Integer);
        let arm = IsaSet::of_arch(Arch::Aarch64).with(Isa::Aarch64DotProd);
        assert_eq!(IntegerProducts::for_isa(arm), IntegerProducts::Integer);
        assert_eq!(IntegerProducts::for_isa(IsaSet::of_arch(Arch::Aarch64)), IntegerProducts::Integer);
    }

    fn u8_tensor(name: &str, dims: &[i64], v: &[u8]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Uint8 as i32,
            raw_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// x (u8, zero point 3) · w (u8 stored with zero point 128) + int32 bias, then Cast.
    fn graph(w_zero: &[u8]) -> pb::GraphProto {
        let i32_bias = pb::TensorProto {
            name: "bias".into(),
            dims: vec![1, 2],
            data_type: DataType::Int32 as i32,
            raw_data: [7i32, -9].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        pb::GraphProto {
            node: vec![
                pb::NodeProto {
                    name: "mm".into(),
                    ..node("MatMulInteger", &["x", "w", "x_zero", "w_zero"], "dots", vec![])
                },
                node("Add", &["dots", "bias"], "sum", vec![]),
                node("Cast", &["sum"], "y", vec![to_float()]),
            ],
            initializer: vec![
                u8_tensor("w", &[3, 2], &[129, 127, 255, 1, 128, 200]),
                u8_tensor("x_zero", &[], &[3]),
                u8_tensor("w_zero", if w_zero.len() > 1 { &[2] } else { &[] }, w_zero),
                i32_bias,
            ],
            ..Default::default()
        }
    }

    #[test]
    fn integer_products_become_f32_products_of_the_same_integers() {
        let mut g = graph(&[128]);
        assert_eq!(lower_to_float(&mut g), Ok(1));
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Cast", "Sub", "MatMul", "Add", "Cast"]);
        let values = |prefix: &str| -> Vec<f32> {
            let t = g.initializer.iter().find(|t| t.name.starts_with(prefix)).expect(prefix);
            t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        assert_eq!(values("w.f32"), [1.0, -1.0, 127.0, -127.0, 0.0, 72.0], "weights less their zero point");
        assert_eq!(values("bias.f32"), [7.0, -9.0]);
        assert_eq!(values("x.zero"), [3.0]);
        assert!(
            g.initializer.iter().all(|t| t.data_type == DataType::Float as i32),
            "no 8-bit or int32 constant is left"
        );
    }

    #[test]
    fn a_graph_the_rewrite_does_not_handle_is_left_as_it_was() {
        let mut g = graph(&[128, 120]);
        let before = g.clone();
        let err = lower_to_float(&mut g).unwrap_err();
        assert!(err.to_string().contains("mm: a zero point is not a scalar"), "{err}");
        assert_eq!(g, before);
        let mut g = graph(&[128]);
        g.node[2] = node("Softmax", &["sum"], "y", vec![]);
        let err = lower_to_float(&mut g).unwrap_err();
        assert!(err.to_string().contains("feeds Softmax"), "{err}");
    }
}
