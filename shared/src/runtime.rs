//! Running a package with tract: the one implementation the box runs on the line and
//! `kensa export` / `kensa eval --package` run on the PC, so an accuracy figure measured on
//! the PC is a figure about the box.
//!
//! A tiled package is scored tile by tile through [`crate::tiling::score_image`], the
//! same combination the host's training-time pipeline uses. [`typed_model`] is the one
//! place an ONNX graph is read into tract, here and on the host.

use std::sync::Arc;

use image::DynamicImage;
use tract_onnx::prelude::*;

use crate::package::{Manifest, Package, PackageError};

mod integer;
pub use crate::tiling::Scored;
use crate::tiling::score_image;
pub use integer::{IntegerProducts, LoweringError, lower_to_float};

/// Why a package could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bytes are not a valid package.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// tract refused the graph.
    #[error("the graph does not load: {0}")]
    Graph(String),
    /// A run failed or produced the wrong outputs.
    #[error("inference failed: {0}")]
    Run(String),
}

/// Read `onnx` into tract with `input` as its first input fact, keeping only the named
/// `outputs` (all when empty), shapes inferred: every graph Kensa runs (backbones, the
/// calibration graph) is loaded here, but packages, which `package_model` reads from the
/// protobuf it may rewrite first.
pub fn typed_model(onnx: &[u8], input: InferenceFact, outputs: &[String]) -> TractResult<TypedModel> {
    let mut model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(onnx))?;
    model.set_input_fact(0, input)?;
    if !outputs.is_empty() {
        model.select_outputs_by_name(outputs)?;
    }
    model.into_typed()
}

/// `onnx` as [`typed_model`] reads it, with its integer products computed as `products`
/// says. Returns the way they are computed: [`IntegerProducts::Integer`] also for a graph
/// that has none or that [`lower_to_float`] does not handle.
fn package_model(
    onnx: &[u8],
    input: InferenceFact,
    products: IntegerProducts,
) -> TractResult<(TypedModel, IntegerProducts)> {
    let mut proto = tract_onnx::onnx().proto_model_for_read(&mut std::io::Cursor::new(onnx))?;
    let lowered = products == IntegerProducts::Float
        && proto.graph.as_mut().is_some_and(|g| matches!(lower_to_float(g), Ok(n) if n > 0));
    let mut model = tract_onnx::onnx().model_for_proto_model(&proto)?;
    model.set_input_fact(0, input)?;
    let products = if lowered { IntegerProducts::Float } else { IntegerProducts::Integer };
    Ok((model.into_typed()?, products))
}

/// A verified package, optimised for its input size and ready to run.
#[derive(Clone)]
pub struct Runner {
    manifest: Manifest,
    plan: Arc<TypedRunnableModel>,
    products: IntegerProducts,
    /// Tiles of one frame scored at once (1 for an untiled package).
    tile_workers: usize,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("manifest", &self.manifest).finish_non_exhaustive()
    }
}

impl Runner {
    /// Load a verified package; `threads` > 1 scores that many tiles of a frame at once
    /// (tiled packages) or gives tract's matrix kernels a pool of that many threads.
    /// Integer products run the faster way on this CPU ([`IntegerProducts::for_this_cpu`]).
    pub fn new(pkg: &Package, threads: usize) -> Result<Self, RuntimeError> {
        Self::with_products(pkg, threads, IntegerProducts::for_this_cpu())
    }

    /// [`Self::new`] with the integer products computed as `products` says (where the
    /// graph has any): benchmarks and the test that both ways agree.
    pub fn with_products(
        pkg: &Package,
        threads: usize,
        products: IntegerProducts,
    ) -> Result<Self, RuntimeError> {
        let p = pkg.manifest.preprocess;
        let graph = |e: TractError| RuntimeError::Graph(format!("{e:#}"));
        let input = u8::fact([1, 3, p.height as usize, p.width as usize]).into();
        let (typed, products) = package_model(&pkg.onnx, input, products).map_err(graph)?;
        let optimised = typed.into_optimized().map_err(graph)?;
        // A tiled package's tiles are independent model inputs: its threads score tiles
        // side by side, each on single-threaded kernels, which keeps every core busy
        // where tract's pool would split each product (docs/benchmarks.md).
        let tile_workers = if pkg.manifest.tiling.is_some() { threads.max(1) } else { 1 };
        let plan = if threads > 1 && tile_workers == 1 {
            let options = RunOptions {
                executor: Some(tract_linalg::multithread::Executor::multithread(threads)),
                ..Default::default()
            };
            optimised.into_runnable_with_options(&options)
        } else {
            optimised.into_runnable()
        }
        .map_err(graph)?;
        Ok(Self { manifest: pkg.manifest.clone(), plan, products, tile_workers })
    }

    /// How this runner computes the package's integer products.
    pub fn integer_products(&self) -> IntegerProducts {
        self.products
    }

    /// Verify package bytes and load them.
    pub fn from_bytes(bytes: &[u8], threads: usize) -> Result<Self, RuntimeError> {
        Self::new(&Package::from_bytes(bytes)?, threads)
    }

    /// The package manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `img` through the shared preprocessing, as the graph's u8 input.
    pub fn pixels(&self, img: &DynamicImage) -> Vec<u8> {
        self.manifest.preprocess.apply(img).iter().map(|&v| v as u8).collect()
    }

    /// Run the graph on pixels already preprocessed to the input size (`[3, H, W]`, u8).
    pub fn run_pixels(&self, pixels: Vec<u8>) -> Result<(f32, Vec<f32>), RuntimeError> {
        let p = self.manifest.preprocess;
        let (h, w) = (p.height as usize, p.width as usize);
        let input = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), pixels)
            .map_err(|e| RuntimeError::Run(format!("input does not fit 1×3×{h}×{w}: {e}")))?;
        let out = self
            .plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| RuntimeError::Run(format!("{e:#}")))?;
        let view = |i: usize, what: &str| {
            out.get(i)
                .ok_or_else(|| RuntimeError::Run(format!("the graph has no {what} output")))?
                .to_plain_array_view::<f32>()
                .map(|v| v.iter().copied().collect::<Vec<f32>>())
                .map_err(|e| RuntimeError::Run(format!("{what} output: {e}")))
        };
        let map = view(0, "anomaly map")?;
        let score = view(1, "score")?
            .first()
            .copied()
            .ok_or_else(|| RuntimeError::Run("the score output is empty".into()))?;
        if map.len() != h * w {
            return Err(RuntimeError::Run(format!("anomaly map holds {} values, want {h}×{w}", map.len())));
        }
        Ok((score, map))
    }

    /// Time `runs` graph runs on `pixels`, op by op: `(op name, ms per run)`, slowest
    /// first; with `by_node`, each node on its own (`op node-name`). Where the time goes,
    /// for benchmarks.
    pub fn profile(
        &self,
        pixels: &[u8],
        runs: usize,
        by_node: bool,
    ) -> Result<Vec<(String, f64)>, RuntimeError> {
        let p = self.manifest.preprocess;
        let input: Tensor = tract_ndarray::Array4::from_shape_vec(
            (1, 3, p.height as usize, p.width as usize),
            pixels.to_vec(),
        )
        .map_err(|e| RuntimeError::Run(e.to_string()))?
        .into();
        let mut totals: std::collections::HashMap<String, f64> = Default::default();
        let mut state = TypedSimpleState::new(&self.plan).map_err(|e| RuntimeError::Run(format!("{e:#}")))?;
        for run in 0..runs + 1 {
            state
                .run_plan_with_eval(tvec!(input.clone().into()), |session, op_state, node, inputs| {
                    let t = std::time::Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
                    // The first run warms caches and allocations; it is not counted.
                    if run > 0 {
                        let key = if by_node { kernel_key(node) } else { node.op.name().to_string() };
                        *totals.entry(key).or_default() += t.elapsed().as_secs_f64();
                    }
                    out
                })
                .map_err(|e| RuntimeError::Run(format!("{e:#}")))?;
        }
        let mut ops: Vec<(String, f64)> =
            totals.into_iter().map(|(k, v)| (k, v * 1e3 / runs.max(1) as f64)).collect();
        ops.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ops)
    }

    /// Score one image: the shared preprocessing, then the graph (per tile when tiled,
    /// the tiles shared out in order among the runner's threads). A NaN anywhere makes
    /// the score NaN, which verdicts treat as "not inspected".
    pub fn score(&self, img: &DynamicImage) -> Result<Scored, RuntimeError> {
        let p = self.manifest.preprocess;
        let (width, height) = (p.width as usize, p.height as usize);
        let one = |crop: &DynamicImage| -> Result<Scored, RuntimeError> {
            let (score, map) = self.run_pixels(self.pixels(crop))?;
            Ok(Scored { score, map, width, height })
        };
        score_image(self.manifest.tiling, img, |crops| {
            if self.tile_workers <= 1 || crops.len() < 2 {
                return crops.iter().map(one).collect();
            }
            let one = &one;
            let per_worker = crops.len().div_ceil(self.tile_workers);
            std::thread::scope(|s| {
                let workers: Vec<_> = crops
                    .chunks(per_worker)
                    .map(|chunk| s.spawn(move || chunk.iter().map(one).collect::<Result<Vec<_>, _>>()))
                    .collect();
                let mut scored = Vec::with_capacity(crops.len());
                for w in workers {
                    scored.extend(w.join().map_err(|_| RuntimeError::Run("a tile worker panicked".into()))??);
                }
                Ok(scored)
            })
        })
    }

    /// Tiles of one frame this runner scores at once.
    pub fn tile_workers(&self) -> usize {
        self.tile_workers
    }
}

/// A node's profile key: op and node name, and for a matrix product the kernel tract
/// chose for it (`Mult: m k n with <kernel>`), which is what decides its speed on a CPU.
fn kernel_key(node: &TypedNode) -> String {
    let kernel = node
        .op
        .info()
        .unwrap_or_default()
        .into_iter()
        .find(|line| line.starts_with("Mult:"))
        .map(|line| format!(" [{line}]"))
        .unwrap_or_default();
    format!("{} {}{kernel}", node.op.name(), node.name)
}

/// Golden inputs: two generated parts (a good one and one with debris), small enough
/// to ride in every package; the runner resizes them like any frame.
fn golden_inputs() -> Vec<DynamicImage> {
    use crate::synth::{Surface, SynthSpec, generate};
    let spec = SynthSpec::square(Surface::BrushedMetal, 64);
    [(1, false), (2, true)]
        .into_iter()
        .map(|(seed, debris)| DynamicImage::ImageLuma8(generate(&spec, seed, debris).image))
        .collect()
}

/// The golden pairs of the package `runner` runs, scored by it (at export, the box then
/// replays them with [`replay_golden`]).
pub fn golden_pairs(runner: &Runner) -> Result<Vec<crate::package::Golden>, RuntimeError> {
    golden_inputs()
        .into_iter()
        .map(|img| {
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| RuntimeError::Run(format!("encoding a golden input: {e}")))?;
            // Score what the box will decode, not the image before encoding.
            let decoded = decode_golden(&png)?;
            let score = runner.score(&decoded)?.score;
            Ok(crate::package::Golden { png, score })
        })
        .collect()
}

fn decode_golden(png: &[u8]) -> Result<DynamicImage, RuntimeError> {
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(|e| RuntimeError::Run(format!("a golden input does not decode: {e}")))
}

/// Score the package's golden inputs and compare with the scores the export recorded:
/// a package that loads but computes something else (another graph or pipeline, a
/// runtime that differs) fails here, naming the pair. Returns each replay's time (µs).
pub fn replay_golden(runner: &Runner) -> Result<Vec<u64>, String> {
    let golden = &runner.manifest().golden;
    if golden.is_empty() {
        return Err(PackageError::NoGolden.to_string());
    }
    let mut times = Vec::with_capacity(golden.len());
    for (i, g) in golden.iter().enumerate() {
        let img = decode_golden(&g.png).map_err(|e| format!("golden pair {}: {e}", i + 1))?;
        let started = std::time::Instant::now();
        let got = runner.score(&img).map_err(|e| format!("golden pair {}: {e}", i + 1))?.score;
        times.push(started.elapsed().as_micros() as u64);
        if !g.matches(got) {
            return Err(format!(
                "golden pair {} scores {got} here, {} at export (tolerance {} %): this package does not compute \
                 what was exported",
                i + 1,
                g.score,
                crate::package::GOLDEN_TOLERANCE * 100.0
            ));
        }
    }
    Ok(times)
}
