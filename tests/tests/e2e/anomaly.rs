//! Train on generated good parts, evaluate on generated defects: the whole host pipeline
//! through the real binary, judged by its own report.

use kensa_e2e::{kensa, run_err, run_ok, tempdir};

#[test]
fn patchcore_finds_debris_and_writes_a_complete_report() {
    let dir = tempdir();
    let data = dir.path().join("data");
    run_ok(
        kensa()
            .args(["synth", "--size", "128", "--train", "24", "--test-good", "10", "--test-defect", "10"])
            .arg("--out")
            .arg(&data),
    );
    let model = dir.path().join("m.kmodel");
    let out = run_ok(
        kensa()
            .args(["train", "--size", "128", "--coreset", "0.1", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&model),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("false-reject rate"), "threshold rule not reported: {stdout}");
    let report = dir.path().join("report");
    run_ok(
        kensa().arg("eval").arg("--data").arg(&data).arg("--model").arg(&model).arg("--report").arg(&report),
    );

    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    let m = &metrics["metrics"];
    let image_auroc = m["image_auroc"].as_f64().unwrap();
    let pixel_auroc = m["pixel_auroc"].as_f64().unwrap();
    assert!(image_auroc > 0.9, "image AUROC {image_auroc}");
    assert!(pixel_auroc > 0.9, "pixel AUROC {pixel_auroc}");
    assert_eq!(m["defective_images"], 10);
    for f in [
        "scores.csv",
        "roc.png",
        "histogram.png",
        "index.html",
        "overlays/debris_000.png",
        "overlays/good_000.png",
    ] {
        assert!(report.join(f).is_file(), "report lacks {f}");
    }
    let csv = std::fs::read_to_string(report.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 21);
}

#[test]
fn eval_refuses_a_corrupt_model_file() {
    let dir = tempdir();
    let data = dir.path().join("data");
    run_ok(
        kensa()
            .args(["synth", "--size", "64", "--train", "2", "--test-good", "1", "--test-defect", "1"])
            .arg("--out")
            .arg(&data),
    );
    let model = dir.path().join("junk.kmodel");
    std::fs::write(&model, b"KENSAMDL\x01\x00garbage").unwrap();
    let err = run_err(kensa().arg("eval").arg("--data").arg(&data).arg("--model").arg(&model));
    assert!(err.contains("junk.kmodel"), "{err}");
}
