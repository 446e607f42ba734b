//! The imported EfficientNet-Lites are the real networks: they classify photos correctly,
//! and the shipped feature backbone is exactly what the import command produces.

use std::path::PathBuf;

use kensa_e2e::{kensa, repo_root, run_err, run_ok, tempdir};

fn weights() -> PathBuf {
    kensa_e2e::weights::efficientnet_lite0()
}

/// Top-1 class per image from `kensa backbone classify` output lines `path: c (p%), ...`.
fn top1(stdout: &str) -> Vec<(String, usize)> {
    stdout
        .lines()
        .map(|l| {
            let (path, rest) = l.rsplit_once(": ").expect("path: classes");
            let class = rest.split_whitespace().next().unwrap().parse().unwrap();
            (path.to_string(), class)
        })
        .collect()
}

#[test]
fn imported_weights_classify_real_photos() {
    classifies_real_photos(&weights());
}

#[test]
fn the_larger_lite1_and_lite2_import_classify_and_train() {
    for variant in [1, 2] {
        let pth = kensa_e2e::weights::efficientnet_lite(variant);
        classifies_real_photos(&pth);
        // Their feature graph names its outputs, and training picks the finest and
        // coarsest of them by itself.
        let dir = tempdir();
        let onnx = dir.path().join("features.onnx");
        let out = run_ok(
            kensa().args(["backbone", "import", "--truncate", "--pth"]).arg(&pth).arg("--out").arg(&onnx),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("EfficientNet-Lite{variant}")), "{stdout}");
        assert!(stdout.contains("block6 (stride 8), block10 (stride 16), block14 (stride 16)"), "{stdout}");
        let data = dir.path().join("data");
        kensa_e2e::synth_small(&data, 6, 2, 2);
        let model = dir.path().join("m.kmodel");
        run_ok(
            kensa()
                .args(["train", "--size", "64", "--data"])
                .arg(&data)
                .arg("--backbone")
                .arg(&onnx)
                .arg("-o")
                .arg(&model),
        );
        let out = run_ok(kensa().arg("inspect-model").arg(&model));
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains("backbone = ") && shown.contains("features    block6, block14"), "{shown}");
        run_ok(kensa().arg("eval").arg("--data").arg(&data).arg("-m").arg(&model));
    }
}

fn classifies_real_photos(pth: &std::path::Path) {
    let dir = tempdir();
    let onnx = dir.path().join("full.onnx");
    run_ok(kensa().args(["backbone", "import", "--pth"]).arg(pth).arg("--out").arg(&onnx));
    let photos = repo_root().join("tests/data/imagenet");
    let out = run_ok(
        kensa()
            .args(["backbone", "classify", "--model"])
            .arg(&onnx)
            .arg(photos.join("chelsea.jpg"))
            .arg(photos.join("coffee.jpg")),
    );
    let got = top1(&String::from_utf8_lossy(&out.stdout));
    assert!((281..=285).contains(&got[0].1), "the cat photo was classified as {}", got[0].1);
    assert!([967, 968, 504].contains(&got[1].1), "the espresso photo was classified as {}", got[1].1);
}

#[test]
fn shipped_backbone_is_reproduced_byte_for_byte() {
    let dir = tempdir();
    let onnx = dir.path().join("features.onnx");
    run_ok(
        kensa()
            .args(["backbone", "import", "--truncate", "--features", "4,7,10", "--pth"])
            .arg(weights())
            .arg("--out")
            .arg(&onnx),
    );
    let shipped = std::fs::read(repo_root().join("models/efficientnet_lite0_features.onnx")).unwrap();
    assert!(
        std::fs::read(&onnx).unwrap() == shipped,
        "import output differs from models/efficientnet_lite0_features.onnx"
    );
}

#[test]
fn truncated_weights_file_is_refused_by_name() {
    let dir = tempdir();
    let bad = dir.path().join("cut.pth");
    let bytes = std::fs::read(weights()).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let err = run_err(
        kensa().args(["backbone", "import", "--pth"]).arg(&bad).arg("--out").arg(dir.path().join("x.onnx")),
    );
    assert!(err.contains("cut.pth"), "{err}");
}
