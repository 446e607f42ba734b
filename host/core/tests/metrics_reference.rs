//! The metric code against independent reference values (scikit-learn, and AUPRO computed
//! by the MVTec-style threshold sweep with scipy) on the same scores.
//! Regenerate the fixture with `python3 host/tests/reference/metrics_reference.py`.

use kensa_core::metrics::{self, PixelSample};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("reference/metrics.json");
    serde_json::from_str(text).expect("metrics.json is valid JSON")
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect()
}

#[test]
fn image_auroc_and_f1_match_scikit_learn() {
    let f = fixture();
    let (scores, labels) = (f32s(&f["image"]["scores"]), bools(&f["image"]["labels"]));
    let auroc = metrics::auroc(&scores, &labels).unwrap();
    assert!((auroc - f["image"]["auroc"].as_f64().unwrap()).abs() < 1e-9, "auroc {auroc}");
    let (f1, t) = metrics::f1_max(&scores, &labels).unwrap();
    assert!((f1 - f["image"]["f1_max"].as_f64().unwrap()).abs() < 1e-9, "f1 {f1}");
    // The returned threshold reproduces that F1.
    assert!((metrics::Confusion::at(&scores, &labels, t).f1() - f1).abs() < 1e-12);
}

#[test]
fn pixel_auroc_and_aupro_match_the_reference() {
    let f = fixture();
    let p = &f["pixel"];
    let (w, h) = (p["width"].as_u64().unwrap() as usize, p["height"].as_u64().unwrap() as usize);
    let maps: Vec<Vec<f32>> = p["maps"].as_array().unwrap().iter().map(f32s).collect();
    let masks: Vec<Vec<bool>> = p["masks"].as_array().unwrap().iter().map(bools).collect();
    let samples: Vec<PixelSample> =
        maps.iter().zip(&masks).map(|(m, g)| PixelSample { map: m, mask: g, width: w, height: h }).collect();
    let (auroc, aupro) = metrics::pixel_metrics(&samples, 0.3);
    let (auroc, aupro) = (auroc.unwrap(), aupro.unwrap());
    assert!((auroc - p["auroc"].as_f64().unwrap()).abs() < 1e-9, "pixel auroc {auroc}");
    assert!((aupro - p["aupro_0.3"].as_f64().unwrap()).abs() < 1e-9, "aupro {aupro}");
}
