use kensa_e2e::{kensa, run_err, run_ok, tempdir};

#[test]
fn synth_writes_mvtec_layout_reproducibly() {
    let a = tempdir();
    let b = tempdir();
    for dir in [a.path(), b.path()] {
        run_ok(
            kensa()
                .args(["synth", "--size", "64", "--train", "3", "--test-good", "2"])
                .args(["--test-defect", "2", "--surface", "wood", "--seed", "9", "--out"])
                .arg(dir),
        );
    }
    for rel in ["train/good/000.png", "train/good/002.png", "test/good/001.png", "test/debris/001.png"] {
        let bytes = std::fs::read(a.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(bytes, std::fs::read(b.path().join(rel)).unwrap(), "{rel} differs between runs");
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    let mask = image::open(a.path().join("ground_truth/debris/000_mask.png")).unwrap().to_luma8();
    assert!(mask.pixels().any(|p| p[0] == 255), "defect mask is empty");
    assert!(!a.path().join("train/good/003.png").exists());
}

#[test]
fn synth_rejects_unknown_surface_by_name() {
    let dir = tempdir();
    let err = run_err(kensa().args(["synth", "--surface", "velvet", "--out"]).arg(dir.path()));
    assert!(err.contains("velvet") && err.contains("brushed-metal"), "{err}");
}

#[test]
fn closed_stdout_ends_quietly() {
    // `kensa … | head` closes the pipe early; the command must not panic or fail.
    let dir = tempdir();
    let mut child = kensa()
        .args(["synth", "--size", "128", "--train", "40", "--out"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kensa synth");
    drop(child.stdout.take()); // the reader goes away before the one line is printed
    let out = child.wait_with_output().expect("wait for kensa synth");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(dir.path().join("train/good/039.png").exists(), "the work itself was not done");
}
