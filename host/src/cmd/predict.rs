//! `kensa predict`: score new images with a trained model, decide OK/NG, box the defects.
//!
//! Writes `predictions.json` (one record per image: score, decision, threshold and defect
//! boxes in source-image pixels, or the reason it could not be inspected) and an overlay
//! per image, and prints one line per image. Each record is also appended to
//! `predictions.jsonl` as it is decided (synced after every group), so a crash keeps what
//! finished at a cost linear in the batch; `predictions.json` is written atomically at
//! the end. Ctrl-C stops after the group being scored and writes everything decided.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail, ensure};
use kensa_core::dataset;
use kensa_core::map::{DefectBox, Regions};
use kensa_core::model::TrainedModel;
use kensa_core::score::Scorer;
use kensa_shared::verdict::decide;
use rayon::prelude::*;
use serde::Serialize;

use crate::cli::PredictArgs;
use crate::{cmd, draw, output};

/// Images decoded and scored at a time (bounds memory for large images); results are
/// written after each group.
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
    /// Image score (the model's rule, see `kensa_core::map::image_score`); `null` when
    /// the image could not be scored.
    pub score: f32,
    /// `OK`, `NG` (score ≥ threshold), or `UNINSPECTED` (unreadable, or the score is not
    /// a number): on a line, an uninspected part is rejected like an NG one.
    pub decision: &'static str,
    /// Threshold applied.
    pub threshold: f32,
    /// Regions of the map at or above the threshold, strongest first, in image pixels
    /// (NG images only).
    pub defects: Vec<DefectBox>,
    /// Overlay written for this image, relative to the output folder.
    pub overlay: Option<String>,
    /// Why the image could not be inspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    output::prepare_dir(&a.out.join("overlays"))?;
    let mut model = TrainedModel::load(&a.model)?;
    cmd::operating_point(&mut model, &a.operating)?;
    let scorer = Scorer::new(model)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Without a handler Ctrl-C would end the process before the results are written.
        if let Err(e) = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)) {
            tracing::warn!("Ctrl-C will not keep partial results: {e}");
        }
    }
    let preds = predict(&scorer, &files, &a.out, &stop, |p| {
        let boxes: Vec<String> =
            p.defects.iter().take(3).map(|b| format!("[{},{}..{},{}]", b.x0, b.y0, b.x1, b.y1)).collect();
        let found =
            if p.defects.is_empty() { String::new() } else { format!(", {} defects ", p.defects.len()) };
        match &p.error {
            Some(e) => say!("{}: {} ({e})", p.file.display(), p.decision),
            None => say!(
                "{}: {} score {:.3} (threshold {:.3}){}{}",
                p.file.display(),
                p.decision,
                p.score,
                p.threshold,
                found,
                boxes.join(" ")
            ),
        }
        Ok(())
    })?;
    let count = |d: &str| preds.iter().filter(|p| p.decision == d).count();
    say!(
        "{} images: {} OK, {} NG, {} uninspected; wrote {}",
        preds.len(),
        count("OK"),
        count("NG"),
        count("UNINSPECTED"),
        a.out.join("predictions.json").display()
    );
    if preds.len() < files.len() {
        bail!("interrupted: {} of {} images decided and written", preds.len(), files.len());
    }
    Ok(())
}

/// Score `files` and write `out/predictions.jsonl`, `out/predictions.json` and
/// `out/overlays/` (which must exist). `each` is called per image as it is decided (for live output); `stop` ends
/// the run after the current group, keeping everything decided.
pub fn predict(
    scorer: &Scorer,
    files: &[PathBuf],
    out: &Path,
    stop: &AtomicBool,
    mut each: impl FnMut(&Prediction) -> Result<()>,
) -> Result<Vec<Prediction>> {
    let overlays = out.join("overlays");
    let json = out.join("predictions.json");
    let mut journal = Journal::create(out.join("predictions.jsonl"))?;
    let mut record = |p: Prediction, all: &mut Vec<Prediction>, journal: &mut Journal| -> Result<()> {
        // On file before it is shown: every verdict printed survives a crash.
        journal.append(&p)?;
        each(&p)?;
        all.push(p);
        Ok(())
    };
    let threshold = scorer.model.threshold.value;
    let mut all = Vec::with_capacity(files.len());
    let mut used_names = std::collections::HashSet::new();
    for group in files.chunks(GROUP) {
        // Decoded images move into one list for scoring; a failure keeps its place.
        let mut images = Vec::with_capacity(group.len());
        let failures: Vec<Option<String>> = group
            .par_iter()
            .map(|p| dataset::open_image(p))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|r| r.map(|img| images.push(img)).err().map(|e| format!("{e:#}")))
            .collect();
        let scored = scorer.score(&images, &|_| ())?;
        let mut decoded = images.iter().zip(scored);
        for (path, failure) in group.iter().zip(failures) {
            let (image, s) = match failure {
                None => decoded.next().expect("one score per decoded image"),
                Some(e) => {
                    let p = Prediction {
                        file: path.clone(),
                        width: 0,
                        height: 0,
                        score: f32::NAN,
                        decision: "UNINSPECTED",
                        threshold,
                        defects: Vec::new(),
                        overlay: None,
                        error: Some(e),
                    };
                    record(p, &mut all, &mut journal)?;
                    continue;
                }
            };
            let (w, h) = (image.width(), image.height());
            let decision = decide(s.score, threshold).as_str();
            // Found once at map scale (drawn on the overlay), reported in image pixels;
            // only an NG image has defects to show.
            let map_boxes = if decision == "NG" { s.map_boxes(threshold) } else { Vec::new() };
            let defects = s.to_source(&map_boxes, w, h);
            let range = (threshold * 0.5, threshold.max(s.score));
            let view = s.view(&scorer.model.preprocess, image);
            let img = draw::overlay(&view, &s.map, range, None, &map_boxes, (w, h));
            let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let mut name = format!("{stem}.png");
            let mut k = 1;
            while !used_names.insert(name.clone()) {
                name = format!("{stem}-{k}.png");
                k += 1;
            }
            img.save(overlays.join(&name)).with_context(|| format!("writing overlay {name}"))?;
            let p = Prediction {
                file: path.clone(),
                width: w,
                height: h,
                score: s.score,
                decision,
                threshold,
                defects,
                overlay: Some(format!("overlays/{name}")),
                error: None,
            };
            record(p, &mut all, &mut journal)?;
        }
        // What a crash must not lose reaches the disk once per group.
        journal.sync()?;
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    output::write_atomic(&json, serde_json::to_string_pretty(&all)?.as_bytes())?;
    Ok(all)
}

/// `predictions.jsonl`: one JSON record per line, appended as each image is decided.
struct Journal {
    file: std::fs::File,
    path: PathBuf,
}

impl Journal {
    fn create(path: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { file, path })
    }

    fn append(&mut self, p: &Prediction) -> Result<()> {
        let mut line = serde_json::to_vec(p)?;
        line.push(b'\n');
        self.file.write_all(&line).with_context(|| format!("writing {}", self.path.display()))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data().with_context(|| format!("writing {}", self.path.display()))
    }
}
