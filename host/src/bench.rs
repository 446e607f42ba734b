//! `kensa bench`: per-image scoring latency by stage, on one thread.
//!
//! One image at a time (batch 1) on the calling thread, as a box on the line scores
//! parts: tract runs single-threaded and the nearest-neighbour search uses no pool.
//! Reports median and 90th percentile of each stage over `runs` images after a warm-up.

use std::time::Duration;

use anyhow::Result;
use image::DynamicImage;

use crate::model::{Scorer, StageTimes, TrainedModel};
use kensa_shared::runtime::Runner;

/// Latency statistics of one stage.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stat {
    /// Median (ms).
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
}

/// Median and p90 of `xs`.
pub fn stat(xs: &[Duration]) -> Stat {
    let mut v: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stat { p50_ms: at(0.5), p90_ms: at(0.9) }
}

/// Time `runs` scorings of `images` (cycled); returns per-stage statistics in pipeline
/// order, with the total last.
pub fn run(model: TrainedModel, images: &[DynamicImage], runs: usize) -> Result<Vec<(&'static str, Stat)>> {
    anyhow::ensure!(!images.is_empty() && runs > 0, "nothing to benchmark");
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
pub fn run_package(runner: &Runner, images: &[DynamicImage], runs: usize) -> Result<Stat> {
    anyhow::ensure!(!images.is_empty() && runs > 0, "nothing to benchmark");
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
pub fn profile_package(
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
