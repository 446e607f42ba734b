//! `kensa bench`: per-image scoring latency by stage, on one thread.
//!
//! One image at a time (batch 1) on the calling thread, as a box on the line scores
//! parts: tract runs single-threaded and the nearest-neighbour search uses no pool.
//! Reports median and 90th percentile of each stage over `runs` images after a warm-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use image::DynamicImage;
use kensa_core::dataset;
use kensa_core::model::TrainedModel;
use kensa_core::score::{Scorer, StageTimes};
use kensa_shared::package::Package;
use kensa_shared::runtime::{IntegerProducts, Runner, RuntimeError};
use kensa_shared::synth::{Surface, SynthSpec};

use crate::cli::{IntegerProductsArg, ProfileArg};

/// How a package is run: tract threads, profile, integer products.
#[derive(Debug, Clone, Copy)]
pub struct How {
    /// tract threads.
    pub threads: usize,
    /// Where the time goes, if asked.
    pub profile: Option<ProfileArg>,
    /// How an int8 package's integer products run.
    pub integer_products: IntegerProductsArg,
}

/// Time `model` stage by stage, or `package` as the box runs it, on `images` (default:
/// one generated part).
pub fn run(
    model: Option<&Path>,
    package: Option<&Path>,
    how: How,
    images: &[PathBuf],
    runs: usize,
) -> Result<()> {
    let How { threads, profile, integer_products } = how;
    let imgs = if images.is_empty() {
        let spec = SynthSpec::square(Surface::BrushedMetal, 256);
        vec![DynamicImage::ImageLuma8(kensa_shared::synth::generate(&spec, 1, true).image)]
    } else {
        super::predict::collect_inputs(images)?
            .iter()
            .map(|p| dataset::open_image(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    if let Some(path) = package {
        let bytes = std::fs::read(path).with_context(|| format!("reading package {}", path.display()))?;
        let products = match integer_products {
            IntegerProductsArg::Auto => IntegerProducts::for_this_cpu(),
            IntegerProductsArg::Integer => IntegerProducts::Integer,
            IntegerProductsArg::Float => IntegerProducts::Float,
        };
        let runner = Package::from_bytes(&bytes)
            .map_err(RuntimeError::from)
            .and_then(|pkg| Runner::with_products(&pkg, threads, products))
            .with_context(|| format!("package {}", path.display()))?;
        say!("package {}, {} image(s), {runs} runs, tract {threads} thread(s)", path.display(), imgs.len());
        if runner.manifest().precision == kensa_shared::package::Precision::Int8 {
            say!("integer products on {}", runner.integer_products().describe());
        }
        let s = run_package(&runner, &imgs, runs)?;
        say!("      graph  p50 {:8.2} ms   p90 {:8.2} ms", s.p50_ms, s.p90_ms);
        if let Some(by) = profile {
            for (op, ms) in profile_package(&runner, &imgs[0], runs, by == ProfileArg::Nodes)? {
                say!("{op:>28}  {ms:8.2} ms");
            }
        }
        return Ok(());
    }
    let m = TrainedModel::load(model.expect("clap requires --model or --package"))?;
    say!("{} model, {} image(s), {runs} runs, one thread, batch 1", m.head.name(), imgs.len());
    for (stage, s) in run_model(m, &imgs, runs)? {
        say!("{stage:>11}  p50 {:8.2} ms   p90 {:8.2} ms", s.p50_ms, s.p90_ms);
    }
    Ok(())
}

/// Latency statistics of one stage.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Stat {
    /// Median (ms).
    p50_ms: f64,
    /// 90th percentile (ms).
    p90_ms: f64,
}

/// Median and p90 of `xs`.
fn stat(xs: &[Duration]) -> Stat {
    let mut v: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stat { p50_ms: at(0.5), p90_ms: at(0.9) }
}

/// Time `runs` scorings of `images` (cycled); returns per-stage statistics in pipeline
/// order, with the total last.
fn run_model(model: TrainedModel, images: &[DynamicImage], runs: usize) -> Result<Vec<(&'static str, Stat)>> {
    ensure!(!images.is_empty() && runs > 0, "nothing to benchmark");
    let scorer = Scorer::with_batch(model, 1)?;
    for img in images.iter().cycle().take(3) {
        scorer.score_timed(img)?;
    }
    let times: Vec<StageTimes> =
        images.iter().cycle().take(runs).map(|img| Ok(scorer.score_timed(img)?.1)).collect::<Result<_>>()?;
    let col = |f: fn(&StageTimes) -> Duration| stat(&times.iter().map(f).collect::<Vec<_>>());
    Ok(vec![
        ("preprocess", col(|t| t.preprocess)),
        ("backbone", col(|t| t.backbone)),
        ("embed", col(|t| t.embed)),
        ("head", col(|t| t.head)),
        ("map", col(|t| t.map)),
        ("total", col(StageTimes::total)),
    ])
}

/// Latency of the package graph alone (preprocessed input in, outputs out) over `runs`
/// images, after a warm-up.
fn run_package(runner: &Runner, images: &[DynamicImage], runs: usize) -> Result<Stat> {
    ensure!(!images.is_empty() && runs > 0, "nothing to benchmark");
    let inputs: Vec<Vec<u8>> = images.iter().map(|i| runner.pixels(i)).collect();
    for px in inputs.iter().cycle().take(3) {
        runner.run_pixels(px.clone())?;
    }
    let mut times = Vec::with_capacity(runs);
    for px in inputs.iter().cycle().take(runs) {
        let px = px.clone();
        let t = std::time::Instant::now();
        runner.run_pixels(px)?;
        times.push(t.elapsed());
    }
    Ok(stat(&times))
}

/// Per-op (or, with `by_node`, per-node) time of the package graph on `img`, slowest
/// first (ms per run).
fn profile_package(
    runner: &Runner,
    img: &DynamicImage,
    runs: usize,
    by_node: bool,
) -> Result<Vec<(String, f64)>> {
    Ok(runner.profile(&runner.pixels(img), runs, by_node)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let xs: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let s = stat(&xs);
        assert_eq!((s.p50_ms, s.p90_ms), (6.0, 9.0));
    }
}
