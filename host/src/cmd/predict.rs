//! `kensa predict`: score new images with a trained model, decide OK/NG, box the defects.
//!
//! Writes `predictions.json` (one record per image: score, decision, threshold and defect
//! boxes in source-image pixels) and an overlay per image, and prints one line per image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use kensa_core::dataset::{self, Item, Label, OnError};
use kensa_core::map::{DefectBox, Regions};
use kensa_core::model::TrainedModel;
use kensa_core::score::Scorer;
use kensa_shared::verdict::decide;
use serde::Serialize;

use crate::cli::PredictArgs;
use crate::draw;
use crate::settings;

/// Images decoded and scored at a time (bounds memory for large images).
const GROUP: usize = 16;

/// The verdict on one image.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Image file.
    pub file: PathBuf,
    /// Image size (px).
    pub width: u32,
    /// Image height (px).
    pub height: u32,
    /// Image score (the model's rule, see `kensa_core::map::image_score`).
    pub score: f32,
    /// `OK`, `NG` (score ≥ threshold), or `UNINSPECTED` (the score is not a number).
    pub decision: &'static str,
    /// Threshold applied.
    pub threshold: f32,
    /// Regions of the map at or above the threshold, strongest first, in image pixels.
    pub defects: Vec<DefectBox>,
    /// Overlay written for this image, relative to the output folder.
    pub overlay: String,
}

/// Image files named by `inputs`: files as given, folders expanded (sorted by name).
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            files.extend(dataset::list_images(p)?);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("no such image or folder: {}", p.display());
        }
    }
    ensure!(!files.is_empty(), "no images found in {inputs:?}");
    Ok(files)
}

/// Judge the images, one line each, and say where the results went.
pub fn run(a: &PredictArgs) -> Result<()> {
    let files = collect_inputs(&a.inputs)?;
    let scorer = Scorer::new(TrainedModel::load(&a.model)?)?;
    let preds = predict(&scorer, &files, &a.out, settings::on_error(a.skip_bad), |p| {
        let boxes: Vec<String> =
            p.defects.iter().take(3).map(|b| format!("[{},{}..{},{}]", b.x0, b.y0, b.x1, b.y1)).collect();
        let found =
            if p.defects.is_empty() { String::new() } else { format!(", {} defects ", p.defects.len()) };
        say!(
            "{}: {} score {:.3} (threshold {:.3}){}{}",
            p.file.display(),
            p.decision,
            p.score,
            p.threshold,
            found,
            boxes.join(" ")
        );
        Ok(())
    })?;
    let ng = preds.iter().filter(|p| p.decision != "OK").count();
    say!(
        "{} images: {} OK, {} not OK; wrote {}",
        preds.len(),
        preds.len() - ng,
        ng,
        a.out.join("predictions.json").display()
    );
    Ok(())
}

/// Score `files` and write `out/predictions.json` and `out/overlays/`. `each` is called
/// per image as it is decided (for live output).
pub fn predict(
    scorer: &Scorer,
    files: &[PathBuf],
    out: &Path,
    on_error: OnError,
    mut each: impl FnMut(&Prediction) -> Result<()>,
) -> Result<Vec<Prediction>> {
    let overlays = out.join("overlays");
    std::fs::create_dir_all(&overlays).with_context(|| format!("creating {}", overlays.display()))?;
    let threshold = scorer.model.threshold.value;
    let mut all = Vec::with_capacity(files.len());
    let mut used_names = std::collections::HashSet::new();
    for group in files.chunks(GROUP) {
        let items: Vec<Item> =
            group.iter().map(|p| Item { path: p.clone(), label: Label::Good, mask: None }).collect();
        let (items, images): (Vec<Item>, Vec<_>) = dataset::open_all(&items, on_error)?.into_iter().unzip();
        let scored = scorer.score(&images, &|_| ())?;
        for ((item, image), s) in items.iter().zip(&images).zip(&scored) {
            let (w, h) = (image.width(), image.height());
            let decision = decide(s.score, threshold).as_str();
            // Found once at map scale (drawn on the overlay), reported in image pixels.
            let map_boxes = if s.score.is_finite() { s.map_boxes(threshold) } else { Vec::new() };
            let defects = s.to_source(&map_boxes, w, h);
            let range = (threshold * 0.5, threshold.max(s.score));
            let view = s.view(&scorer.model.preprocess, image);
            let img = draw::overlay(&view, &s.map, range, None, &map_boxes);
            let mut name = format!("{}.png", item.stem());
            let mut k = 1;
            while !used_names.insert(name.clone()) {
                name = format!("{}-{k}.png", item.stem());
                k += 1;
            }
            img.save(overlays.join(&name)).with_context(|| format!("writing overlay {name}"))?;
            let p = Prediction {
                file: item.path.clone(),
                width: w,
                height: h,
                score: s.score,
                decision,
                threshold,
                defects,
                overlay: format!("overlays/{name}"),
            };
            each(&p)?;
            all.push(p);
        }
    }
    let json = out.join("predictions.json");
    std::fs::write(&json, serde_json::to_string_pretty(&all)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(all)
}
