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
use kensa_shared::tiling::Tiling;

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
/// one generated part: 256 px, or four tiles a side for a tiled model). A tiled model or
/// package is timed per frame, its tiles one after another, and per tile.
pub fn run(
    model: Option<&Path>,
    package: Option<&Path>,
    how: How,
    images: &[PathBuf],
    runs: usize,
) -> Result<()> {
    let How { threads, profile, integer_products } = how;
    let load_images = |tiling: Option<Tiling>| -> Result<Vec<DynamicImage>> {
        if images.is_empty() {
            let side = tiling.map_or(256, |t| 4 * t.tile);
            let spec = SynthSpec::square(Surface::BrushedMetal, side);
            return Ok(vec![DynamicImage::ImageLuma8(kensa_shared::synth::generate(&spec, 1, true).image)]);
        }
        Ok(super::predict::collect_inputs(images)?
            .iter()
            .map(|p| dataset::open_image(p))
            .collect::<Result<Vec<_>, _>>()?)
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
        let tiling = runner.manifest().tiling;
        let imgs = load_images(tiling)?;
        say!("package {}, {} image(s), {runs} runs, tract {threads} thread(s)", path.display(), imgs.len());
        if runner.manifest().precision == kensa_shared::package::Precision::Int8 {
            say!("integer products on {}", runner.integer_products().describe());
        }
        match tiling {
            None => {
                let s = run_package(&runner, &imgs, runs)?;
                say!("      graph  p50 {:8.2} ms   p90 {:8.2} ms", s.p50_ms, s.p90_ms);
            }
            Some(t) => {
                let (frame, tiles) = run_tiled_package(&runner, &imgs, runs)?;
                say!("tiles of {} px, overlap {} px: {tiles} per frame", t.tile, t.overlap);
                say!("      frame  p50 {:8.2} ms   p90 {:8.2} ms", frame.p50_ms, frame.p90_ms);
                say!("   per tile  p50 {:8.2} ms", frame.p50_ms / tiles as f64);
            }
        }
        if let Some(by) = profile {
            // One model input: a tile's worth of graph.
            for (op, ms) in profile_package(&runner, &imgs[0], runs, by == ProfileArg::Nodes)? {
                say!("{op:>28}  {ms:8.2} ms");
            }
        }
        return Ok(());
    }
    let m = TrainedModel::load(model.expect("clap requires --model or --package"))?;
    let imgs = load_images(m.tiling)?;
    let tiling = m.tiling;
    say!("{} model, {} image(s), {runs} runs, one thread, batch 1", m.head.name(), imgs.len());
    let (stages, tiles) = run_model(m, &imgs, runs)?;
    if let Some(t) = tiling {
        say!(
            "tiles of {} px, overlap {} px: {tiles} per image; stages summed over the tiles",
            t.tile,
            t.overlap
        );
    }
    for (stage, s) in &stages {
        say!("{stage:>11}  p50 {:8.2} ms   p90 {:8.2} ms", s.p50_ms, s.p90_ms);
    }
    if tiling.is_some()
        && let Some((_, total)) = stages.last()
    {
        say!("   per tile  p50 {:8.2} ms", total.p50_ms / tiles as f64);
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
/// order, with the total last (a tiled model's `tiling` before it), and the median
/// number of tiles per image.
fn run_model(
    model: TrainedModel,
    images: &[DynamicImage],
    runs: usize,
) -> Result<(Vec<(&'static str, Stat)>, usize)> {
    ensure!(!images.is_empty() && runs > 0, "nothing to benchmark");
    let tiled = model.tiling.is_some();
    let scorer = Scorer::with_batch(model, 1)?;
    for img in images.iter().cycle().take(3) {
        scorer.score_timed(img)?;
    }
    let times: Vec<StageTimes> =
        images.iter().cycle().take(runs).map(|img| Ok(scorer.score_timed(img)?.1)).collect::<Result<_>>()?;
    let col = |f: fn(&StageTimes) -> Duration| stat(&times.iter().map(f).collect::<Vec<_>>());
    let mut stages = vec![
        ("preprocess", col(|t| t.preprocess)),
        ("backbone", col(|t| t.backbone)),
        ("embed", col(|t| t.embed)),
        ("head", col(|t| t.head)),
        ("map", col(|t| t.map)),
    ];
    if tiled {
        stages.push(("tiling", col(|t| t.tiling)));
    }
    stages.push(("total", col(StageTimes::total)));
    let mut tiles: Vec<usize> = times.iter().map(|t| t.tiles).collect();
    tiles.sort_unstable();
    Ok((stages, tiles[tiles.len() / 2]))
}

/// Latency of whole frames through a tiled package as the box scores them (every tile's
/// preprocessing and graph run, one after another, then the blending), over `runs`
/// frames after a warm-up; and the median number of tiles per frame.
fn run_tiled_package(runner: &Runner, images: &[DynamicImage], runs: usize) -> Result<(Stat, usize)> {
    ensure!(!images.is_empty() && runs > 0, "nothing to benchmark");
    let tiling = runner.manifest().tiling;
    for img in images.iter().cycle().take(2) {
        runner.score(img)?;
    }
    let mut times = Vec::with_capacity(runs);
    for img in images.iter().cycle().take(runs) {
        let t = std::time::Instant::now();
        runner.score(img)?;
        times.push(t.elapsed());
    }
    let mut tiles: Vec<usize> =
        images.iter().map(|i| tiling.map_or(1, |t| t.tiles(i.width(), i.height()).len())).collect();
    tiles.sort_unstable();
    Ok((stat(&times), tiles[tiles.len() / 2]))
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
