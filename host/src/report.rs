//! The evaluation report folder: numbers for machines, pictures for people.
//!
//! `metrics.json`, `scores.csv`, `roc.png`, `histogram.png`, `overlays/` (every defect,
//! and the good parts that scored worst) and `index.html` tying them together.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::draw;
use kensa_core::eval::{self, Case, Metrics, OperatingPoint};
use kensa_core::map::Regions;
use kensa_core::metrics;
use kensa_core::model::TrainedModel;

/// Confidence of the false-reject bounds in the threshold table.
const CONFIDENCE: f64 = kensa_core::train::threshold::DEFAULT_CONFIDENCE;

/// Good images with the highest scores shown as "worst false alarms".
const WORST_GOOD: usize = 12;

fn save(img: &image::RgbImage, path: &Path) -> Result<()> {
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

/// Colour scale shared by all overlays: from the median good score to the larger of the
/// threshold and the highest score, so the same colour means the same score everywhere.
fn colour_range(cases: &[Case], threshold: f32) -> (f32, f32) {
    let mut good: Vec<f32> = cases.iter().filter(|c| !c.item.is_defect()).map(|c| c.scored.score).collect();
    good.sort_by(f32::total_cmp);
    let lo = good.get(good.len() / 2).copied().unwrap_or(0.0) * 0.5;
    let hi = cases.iter().map(|c| c.scored.score).fold(f32::NEG_INFINITY, f32::max);
    (lo, if threshold.is_finite() { hi.max(threshold) } else { hi })
}

/// Overlay file name for a case: `<type>_<stem>.png`.
fn overlay_name(c: &Case) -> String {
    format!("{}_{}.png", c.item.kind(), c.item.stem())
}

/// Write the whole report into `dir` (checked with [`crate::output::prepare_dir`]
/// before scoring started).
pub fn write(dir: &Path, model: &TrainedModel, m: &Metrics, cases: &[Case]) -> Result<()> {
    std::fs::create_dir_all(dir.join("overlays"))
        .with_context(|| format!("creating report folder {}", dir.display()))?;
    let table = eval::threshold_table(m, cases, &model.training.evidence, CONFIDENCE);
    let json = serde_json::json!({
        "model": model.head.name(),
        "training": model.training,
        "metrics": m,
        "threshold_table": table,
    });
    std::fs::write(dir.join("metrics.json"), serde_json::to_string_pretty(&json)?)?;

    let mut csv = String::from("file,type,defective,score,decision\n");
    for c in cases {
        let decision = if c.scored.score >= m.threshold { "NG" } else { "OK" };
        writeln!(
            csv,
            "{},{},{},{:.6},{decision}",
            c.item.path.display(),
            c.item.kind(),
            c.item.is_defect(),
            c.scored.score
        )?;
    }
    std::fs::write(dir.join("scores.csv"), csv)?;

    let scores: Vec<f32> = cases.iter().map(|c| c.scored.score).collect();
    let positive: Vec<bool> = cases.iter().map(|c| c.item.is_defect()).collect();
    if let Some(auroc) = m.image_auroc {
        let pts: Vec<(f64, f64)> =
            metrics::roc_curve(&scores, &positive).iter().map(|p| (p.0, p.1)).collect();
        save(&draw::roc(&pts, auroc), &dir.join("roc.png"))?;
    }
    let split = |want: bool| -> Vec<f32> {
        cases.iter().filter(|c| c.item.is_defect() == want).map(|c| c.scored.score).collect()
    };
    save(&draw::histogram(&split(false), &split(true), m.threshold), &dir.join("histogram.png"))?;
    if !model.training.curves.is_empty() {
        save(&draw::curves(&model.training.curves), &dir.join("curves.png"))?;
    }

    // Overlays: every defect, then the worst-scoring good parts.
    let p = model.preprocess;
    let range = colour_range(cases, m.threshold);
    let mut worst_good: Vec<&Case> = cases.iter().filter(|c| !c.item.is_defect()).collect();
    worst_good.sort_by(|a, b| b.scored.score.total_cmp(&a.scored.score));
    worst_good.truncate(WORST_GOOD);
    let shown: Vec<&Case> =
        cases.iter().filter(|c| c.item.is_defect()).chain(worst_good.iter().copied()).collect();
    {
        use rayon::prelude::*;
        shown.par_iter().try_for_each(|c| {
            // Boxes are what the line would reject: only NG verdicts have them.
            let ng = c.scored.score >= m.threshold;
            let boxes = if ng { c.scored.map_boxes(m.threshold) } else { Vec::new() };
            let view = c.scored.view(&p, &c.image);
            let source = (c.image.width(), c.image.height());
            let img = draw::overlay(&view, &c.scored.map, range, c.mask.as_ref(), &boxes, source);
            save(&img, &dir.join("overlays").join(overlay_name(c)))
        })?;
    }

    std::fs::write(dir.join("index.html"), html(model, m, &shown, &table))?;
    Ok(())
}

/// What the threshold rests on: the training evidence, warnings, and the threshold table.
fn evidence_html(h: &mut String, model: &TrainedModel, table: &[OperatingPoint]) {
    let t = &model.training;
    let _ = write!(
        h,
        "<h2>Threshold evidence</h2><p>{} good training images, each scored out of sample ({} folds: by a model \
         fitted without its fold){}.</p>",
        t.evidence.good.len(),
        t.folds,
        if t.evidence.defective.is_empty() {
            String::new()
        } else {
            format!(", and {} defective validation images", t.evidence.defective.len())
        }
    );
    for w in &t.warnings {
        let _ = write!(h, "<p style=\"color:#b00\"><b>Warning:</b> {w}</p>");
    }
    h.push_str(
        "<table><tr><th>threshold</th><th>where it comes from</th><th>escapes (test)</th><th>false rejects \
         (test)</th><th>false-reject rate at most (training evidence)</th></tr>",
    );
    for r in table {
        let c = r.confusion;
        let bound = r.frr_bound.map_or("n/a".to_string(), |b| format!("{:.2} %", 100.0 * b));
        let _ = write!(
            h,
            "<tr><td>{:.4}</td><td>{}</td><td>{} of {}</td><td>{} of {}</td><td>{bound}</td></tr>",
            r.threshold,
            r.label,
            c.false_ok,
            c.false_ok + c.true_ng,
            c.false_ng,
            c.false_ng + c.true_ok
        );
    }
    let _ = write!(
        h,
        "</table><p>The bound is a one-sided {:.0} % Clopper–Pearson limit: with that confidence, a good part is \
         rejected at most this often at that threshold, judged from the training evidence alone.</p>",
        100.0 * CONFIDENCE
    );
}

fn html(model: &TrainedModel, m: &Metrics, shown: &[&Case], table: &[OperatingPoint]) -> String {
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    let c = m.confusion;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Kensa evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:4px;font-size:12px}}img.o{{width:256px}}</style></head><body>
<h1>Kensa evaluation: {model} on {data}</h1>
<table><tr><th>image AUROC</th><th>pixel AUROC</th><th>AUPRO@0.3</th><th>image F1-max</th><th>F1 at threshold</th></tr>
<tr><td>{ia}</td><td>{pa}</td><td>{ap}</td><td>{f1m}</td><td>{f1:.4}</td></tr></table>
<p>Operating threshold <b>{t:.4}</b>, chosen by: {rule}. F1-max looks at the test labels and is shown for
comparison only.</p>
<h2>Confusion matrix at the operating threshold</h2>
<table><tr><th></th><th>judged NG</th><th>judged OK</th></tr>
<tr><th>defective ({nd})</th><td>{tn}</td><td>{fo} (escapes)</td></tr>
<tr><th>good ({ng})</th><td>{fn_} (false alarms)</td><td>{to}</td></tr></table>
<h2>Per defect type</h2><table><tr><th>type</th><th>images</th><th>image AUROC vs good</th><th>pixel AUROC</th><th>AUPRO@0.3</th><th>caught at threshold</th></tr>"#,
        model = model.head.name(),
        data = model.training.dataset,
        ia = f(m.image_auroc),
        pa = f(m.pixel_auroc),
        ap = f(m.aupro),
        f1m = f(m.image_f1_max),
        f1 = m.image_f1,
        t = m.threshold,
        rule = m.threshold_rule,
        nd = m.defective_images,
        ng = m.good_images,
        tn = c.true_ng,
        fo = c.false_ok,
        fn_ = c.false_ng,
        to = c.true_ok,
    );
    for (kind, t) in &m.per_type {
        let _ = write!(
            h,
            "<tr><td>{kind}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td></tr>",
            t.images,
            f(t.image_auroc),
            f(t.pixel_auroc),
            f(t.aupro),
            100.0 * t.recall
        );
    }
    h.push_str("</table>");
    evidence_html(&mut h, model, table);
    h.push_str("<h2>Scores</h2><img src=\"histogram.png\"> <img src=\"roc.png\">");
    if !model.training.curves.is_empty() {
        let _ = write!(
            h,
            "<h2>Training</h2><p>{} epochs on {} good + {} defective images (augmented views), early-stopped on \
             the validation images; the model keeps the epoch with the lowest validation loss.</p>\
             <img src=\"curves.png\">",
            model.training.curves.len(),
            model.training.images,
            model.training.defect_images
        );
    }
    h.push_str("<h2>Overlays</h2><p>Heat map of the anomaly score (for a supervised head, each patch's NG evidence: \
                an exact class-activation map), blue low, red high; ground truth outlined in green, predicted defects \
                boxed in red on NG verdicts only. The bar under each overlay maps colour to score.</p>");
    for (title, want) in
        [("Defective parts", true), ("Good parts with the highest scores (false alarms first)", false)]
    {
        let _ = write!(h, "<h3>{title}</h3>");
        for c in shown.iter().filter(|c| c.item.is_defect() == want) {
            let verdict = if c.scored.score >= m.threshold { "NG" } else { "OK" };
            let _ = write!(
                h,
                "<figure><img class=\"o\" src=\"overlays/{}\"><figcaption>{} {} — {:.3} {verdict}</figcaption></figure>",
                overlay_name(c),
                c.item.kind(),
                c.item.stem(),
                c.scored.score
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}
