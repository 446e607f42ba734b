//! Train on generated good parts, evaluate on generated defects: the whole host pipeline
//! through the real binary, judged by its own report.

use kensa_e2e::{kensa, kensa_fw, run_err, run_ok, tempdir};

/// One test on purpose: train once, then check every file of the report it wrote.
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

    // `kensa predict` on the defective parts: decisions, boxes on the debris, overlays.
    let pred = dir.path().join("pred");
    let out = run_ok(
        kensa()
            .arg("predict")
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&pred)
            .arg(data.join("test/debris")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| l.contains("score")).count(), 10, "{stdout}");
    let preds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pred.join("predictions.json")).unwrap()).unwrap();
    let preds = preds.as_array().unwrap();
    assert_eq!(preds.len(), 10);
    let mut ng = 0;
    for p in preds {
        assert!(pred.join(p["overlay"].as_str().unwrap()).is_file(), "overlay missing for {p}");
        if p["decision"] != "NG" {
            continue;
        }
        ng += 1;
        let file = std::path::Path::new(p["file"].as_str().unwrap());
        let stem = file.file_stem().unwrap().to_string_lossy();
        let mask = image::open(data.join(format!("ground_truth/debris/{stem}_mask.png"))).unwrap().to_luma8();
        let b = &p["defects"][0];
        let (x0, y0, x1, y1) = ["x0", "y0", "x1", "y1"].map(|k| b[k].as_u64().unwrap() as u32).into();
        let hit = mask
            .enumerate_pixels()
            .any(|(x, y, v)| v[0] > 0 && x + 3 >= x0 && x <= x1 + 3 && y + 3 >= y0 && y <= y1 + 3);
        assert!(hit, "{stem}: strongest box {b} misses the debris");
    }
    assert!(ng >= 5, "only {ng} of 10 defective parts judged NG");
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

#[test]
fn supervised_and_combined_models_learn_from_defects_and_run_on_the_box() {
    let dir = tempdir();
    let data = dir.path().join("data");
    run_ok(
        kensa()
            .args(["synth", "--size", "128", "--surface", "brushed-metal", "--train", "16"])
            .args(["--test-good", "10", "--test-defect", "50", "--out"])
            .arg(&data),
    );
    let model = dir.path().join("c.kmodel");
    let out = run_ok(
        kensa()
            .args([
                "train",
                "--supervised",
                "--combined",
                "--size",
                "128",
                "--coreset",
                "0.1",
                "--ng-views",
                "3",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&model),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 2 of every 5 defects train, 1 validates; 1 of every 5 good test images validates.
    assert!(stdout.contains("on 16 good + 20 defective images"), "{stdout}");
    assert!(stdout.contains("F1-optimal on 10 defective validation images and 2 good images"), "{stdout}");
    assert!(dir.path().join("c.curves.png").is_file());

    let report = dir.path().join("report");
    let out =
        run_ok(kensa().arg("eval").arg("--data").arg(&data).arg("-m").arg(&model).arg("-r").arg(&report));
    assert!(String::from_utf8_lossy(&out.stdout).contains("held-out test images of its split"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    let m = &metrics["metrics"];
    assert_eq!((m["defective_images"].as_u64(), m["good_images"].as_u64()), (Some(20), Some(8)));
    assert!(m["image_auroc"].as_f64().unwrap() > 0.9, "{m}");
    assert!(report.join("curves.png").is_file() && report.join("overlays/debris_003.png").is_file());

    // The same package format, run by the box as it is.
    let pkg = dir.path().join("c.kpkg");
    run_ok(kensa().arg("export").arg("-m").arg(&model).arg("-o").arg(&pkg));
    let out =
        run_ok(kensa_fw().args(["--sim", "--parts", "6", "--rate", "4", "--json", "--model"]).arg(&pkg));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("combined-patchcore model 128x128"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("part ")).count(), 6, "{stdout}");
}
