//! Decisions an engineer can trust: thresholds that say what they rest on, operating
//! points set on the PC, images that decode whole or not at all, and commands that keep
//! what they finished.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kensa_e2e::{kensa, run_err, run_ok, tempdir};

/// Generated parts at 64 px and a model trained on them.
fn trained(dir: &Path, train: usize) -> (PathBuf, PathBuf, String) {
    let data = dir.join("data");
    run_ok(
        kensa()
            .args(["synth", "--size", "64", "--test-good", "6", "--test-defect", "6"])
            .arg("--train")
            .arg(train.to_string())
            .arg("--out")
            .arg(&data),
    );
    let model = dir.join("m.kmodel");
    let out = run_ok(
        kensa()
            .args(["train", "--size", "64", "--coreset", "0.1", "--data"])
            .arg(&data)
            .arg("-o")
            .arg(&model),
    );
    (data, model, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

#[test]
fn the_threshold_rests_on_every_good_image_and_says_what_it_shows() {
    let dir = tempdir();
    let (data, model, stdout) = trained(dir.path(), 20);
    // All 20 are in the bank and all 20 are scored out of sample: no held-out tenth.
    assert!(stdout.contains("on 20 good"), "{stdout}");
    assert!(stdout.contains("20 good images scored out of sample (5 folds)"), "{stdout}");
    // 20 images cannot show 1 % false rejects; training says so and how many would.
    assert!(stdout.contains("warning: 20 good images cannot show a 1.0 % false-reject rate"), "{stdout}");
    assert!(stdout.contains("299"), "{stdout}");

    let report = dir.path().join("report");
    let out =
        run_ok(kensa().arg("eval").arg("--data").arg(&data).arg("-m").arg(&model).arg("-r").arg(&report));
    assert!(String::from_utf8_lossy(&out.stdout).contains("warning: 20 good images"));
    let m = json(&report.join("metrics.json"));
    let good = m["training"]["evidence"]["good"].as_array().unwrap();
    assert_eq!(good.len(), 20);
    let threshold = m["metrics"]["threshold"].as_f64().unwrap();
    let top = good.iter().map(|v| v.as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert!(
        threshold > top && threshold - top < 1e-3,
        "just above the highest good score: {threshold} vs {top}"
    );
    let table = m["threshold_table"].as_array().unwrap();
    assert!(table.len() >= 2, "{table:?}");
    assert!(table.iter().any(|r| r["label"].as_str().unwrap().contains("operating threshold")));
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("Threshold evidence") && html.contains("Warning:"), "report lacks the evidence");

    // The operating point moves on the PC, for eval, predict and export alike.
    let out = run_ok(
        kensa().arg("eval").arg("--data").arg(&data).arg("-m").arg(&model).args(["--threshold", "1e9"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("operating threshold 1000000000.0000 (set by hand)"), "{stdout}");
    assert!(stdout.contains("0 NG caught, 6 escaped"), "{stdout}");
    let out =
        run_ok(kensa().arg("eval").arg("--data").arg(&data).arg("-m").arg(&model).args(["--frr", "0.5"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("false-reject rate at most 50.0 % with 95 % confidence"), "{stdout}");

    let pred = dir.path().join("pred");
    let out = run_ok(
        kensa()
            .arg("predict")
            .arg("-m")
            .arg(&model)
            .arg("-o")
            .arg(&pred)
            .args(["--threshold", "-1e9"])
            .arg(data.join("test/good")),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 images: 0 OK, 6 NG"));

    let pkg = dir.path().join("m.kpkg");
    let out = run_ok(kensa().arg("export").arg("-m").arg(&model).arg("-o").arg(&pkg).args(["--frr", "0.2"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // What the export measured, not only where it wrote.
    assert!(stdout.contains("measured as the box runs it on 12 test images: image AUROC"), "{stdout}");
    assert!(stdout.contains("escapes of 6 defective"), "{stdout}");
    let out = run_ok(kensa().arg("inspect-package").arg(&pkg));
    assert!(String::from_utf8_lossy(&out.stdout).contains("false-reject rate at most 20.0 %"));
}

#[test]
fn predict_keeps_a_row_for_every_file_and_names_what_is_wrong() {
    let dir = tempdir();
    let (data, model, _) = trained(dir.path(), 8);
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for name in ["000.png", "001.png"] {
        std::fs::copy(data.join("test/good").join(name), inputs.join(name)).unwrap();
    }
    std::fs::write(inputs.join("empty.png"), b"").unwrap();
    // A JPEG cut to a third of its bytes: lenient decoding fills the rest with grey.
    let img = image::open(data.join("test/good/002.png")).unwrap();
    let mut jpg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpg, image::ImageFormat::Jpeg).unwrap();
    let jpg = jpg.into_inner();
    std::fs::write(inputs.join("cut.jpg"), &jpg[..jpg.len() / 3]).unwrap();

    let pred = dir.path().join("pred");
    let out = run_ok(kensa().arg("predict").arg("-m").arg(&model).arg("-o").arg(&pred).arg(&inputs));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 images:") && stdout.contains("2 uninspected"), "{stdout}");
    let rows = json(&pred.join("predictions.json"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(&journal(&pred), rows, "the journal and the summary agree");
    let row = |name: &str| rows.iter().find(|r| r["file"].as_str().unwrap().ends_with(name)).unwrap();
    for bad in ["empty.png", "cut.jpg"] {
        let r = row(bad);
        assert_eq!(r["decision"], "UNINSPECTED", "{r}");
        assert!(r["error"].as_str().unwrap().contains(bad), "{r}");
    }
    assert!(row("cut.jpg")["error"].as_str().unwrap().contains("truncated"));
    assert!(row("000.png")["error"].is_null());

    // Training refuses the same file by name instead of learning a grey part.
    std::fs::copy(inputs.join("cut.jpg"), data.join("train/good/cut.jpg")).unwrap();
    let err = run_err(
        kensa()
            .args(["train", "--size", "64", "--data"])
            .arg(&data)
            .arg("-o")
            .arg(dir.path().join("x.kmodel")),
    );
    assert!(err.contains("cut.jpg") && err.contains("truncated"), "{err}");
}

#[test]
fn ctrl_c_keeps_what_predict_finished() {
    let dir = tempdir();
    let (data, model, _) = trained(dir.path(), 8);
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let src = data.join("test/good/000.png");
    // Large enough that scoring them all takes seconds.
    let big = image::imageops::resize(
        &image::open(&src).unwrap().to_luma8(),
        1024,
        1024,
        image::imageops::FilterType::Nearest,
    );
    for i in 0..400 {
        big.save(inputs.join(format!("p{i:03}.png"))).unwrap();
    }
    // Start predicting, wait for the first verdict, send `signal`; the verdicts printed.
    let interrupt = |pred: &Path, signal: &str| {
        let mut child = kensa()
            .arg("predict")
            .arg("-m")
            .arg(&model)
            .arg("-o")
            .arg(pred)
            .arg(&inputs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.contains("p000.png"), "{first}");
        run_ok(std::process::Command::new("kill").args([signal, &child.id().to_string()]));
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(!child.wait().unwrap().success(), "an interrupted run says so by its exit status");
        1 + rest.iter().filter(|l| l.contains(".png:")).count()
    };

    let pred = dir.path().join("pred");
    let printed = interrupt(&pred, "-INT");
    let rows = json(&pred.join("predictions.json"));
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() < 400, "{} rows", rows.len());
    assert_eq!(rows.len(), printed, "every printed verdict is kept");
    assert_eq!(journal(&pred).len(), printed, "the journal holds the same rows");

    // Killed outright: no chance to write the summary file, but the journal has every
    // verdict that was printed (and at most the one being printed when the kill came).
    let crashed = dir.path().join("crashed");
    let printed = interrupt(&crashed, "-KILL");
    let rows = journal(&crashed);
    assert!((printed..=printed + 1).contains(&rows.len()), "{} rows, {printed} printed", rows.len());
    assert!(rows.iter().all(|r| r["decision"] == "OK" || r["decision"] == "NG"), "{rows:?}");
}

/// The rows of `predictions.jsonl` in `pred`.
fn journal(pred: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(pred.join("predictions.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn commands_check_where_they_write_before_working() {
    let dir = tempdir();
    let data = dir.path().join("data");
    kensa_e2e::synth_small(&data, 4, 2, 2);
    let started = std::time::Instant::now();
    let err = run_err(
        kensa()
            .args(["train", "--size", "64", "--data"])
            .arg(&data)
            .arg("-o")
            .arg(dir.path().join("no/such/m.kmodel")),
    );
    assert!(err.contains("folder") && err.contains("does not exist"), "{err}");
    assert!(started.elapsed().as_secs() < 5, "refused before training");
    let err = run_err(kensa().args(["train", "--size", "64", "--data"]).arg(&data).arg("-o").arg(&data));
    assert!(err.contains("is a folder"), "{err}");

    let model = dir.path().join("m.kmodel");
    run_ok(kensa().args(["train", "--size", "64", "--data"]).arg(&data).arg("-o").arg(&model));
    let blocker = dir.path().join("report");
    std::fs::write(&blocker, b"a file where the report folder should go").unwrap();
    let err =
        run_err(kensa().arg("eval").arg("--data").arg(&data).arg("-m").arg(&model).arg("-r").arg(&blocker));
    assert!(err.contains("not a folder"), "{err}");
    let err =
        run_err(kensa().arg("export").arg("-m").arg(&model).arg("-o").arg(dir.path().join("gone/m.kpkg")));
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn supervised_training_refuses_too_few_defects_and_says_how_many() {
    let dir = tempdir();
    let data = dir.path().join("data");
    // 10 defects: the labelled split gives 4 to training, 2 to validation.
    kensa_e2e::synth_small(&data, 4, 5, 10);
    let err = run_err(
        kensa()
            .args(["train", "--supervised", "--size", "64", "--data"])
            .arg(&data)
            .arg("-o")
            .arg(dir.path().join("s.kmodel")),
    );
    assert!(
        err.contains("at least 20 defective training images") && err.contains("gives 4 of the 10"),
        "{err}"
    );
    assert!(err.contains("leave out --supervised"), "{err}");
}

#[test]
fn a_training_config_file_sets_options_and_the_model_keeps_them() {
    let dir = tempdir();
    let data = dir.path().join("data");
    kensa_e2e::synth_small(&data, 8, 2, 2);
    let config = dir.path().join("train.toml");
    std::fs::write(
        &config,
        format!(
            "data = {:?}\nsize = 64\ncoreset = 0.2\nfolds = 3\nfrr = 0.05\nrgb = false\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let model = dir.path().join("m.kmodel");
    // The command line wins over the file.
    let out =
        run_ok(kensa().arg("train").arg("--config").arg(&config).args(["--folds", "4", "-o"]).arg(&model));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("8 good images scored out of sample (4 folds)"), "{stdout}");
    let out = run_ok(kensa().arg("inspect-model").arg(&model));
    let shown = String::from_utf8_lossy(&out.stdout);
    for line in ["coreset = 0.2", "folds = 4", "size = 64", "frr = 0.05", "method = \"patchcore\""] {
        assert!(shown.contains(line), "inspect-model lacks {line:?}: {shown}");
    }
    assert!(shown.contains("evidence    8 good scores out of sample (4 folds)"), "{shown}");

    // What inspect-model prints is itself a config that trains the same way.
    let options = shown.split("options (kensa train --config):\n").nth(1).unwrap();
    let again = dir.path().join("again.toml");
    std::fs::write(&again, options).unwrap();
    let out =
        run_ok(kensa().arg("train").arg("--config").arg(&again).arg("-o").arg(dir.path().join("m2.kmodel")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(4 folds)"));

    std::fs::write(&config, "coreset = 0.2\nno-such-option = 1\n").unwrap();
    let err = run_err(kensa().arg("train").arg("--config").arg(&config).arg("-o").arg(&model));
    assert!(err.contains("train.toml") && err.contains("no-such-option"), "{err}");
}
