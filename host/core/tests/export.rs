//! The exported package must score exactly like training-time scoring, in tract and in
//! onnxruntime, and pass the ONNX checker, at every precision.

use std::path::Path;
use std::process::Command;

use kensa_core::model::TrainedModel;
use kensa_core::score::{Scored, Scorer};
use kensa_core::train::Method;
use kensa_shared::package::Precision;

mod common;

use common::{
    exported, exported_int8, images, map_error, tract_outputs, trained, trained_supervised, trained_with,
};

#[test]
fn exported_fp32_package_matches_training_time_scores_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    matches_training_time(trained(dir.path()));
}

#[test]
fn exported_padim_package_matches_training_time_scores_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    matches_training_time(trained_with(dir.path(), Method::Padim { channels: 40 }));
}

#[test]
fn exported_supervised_and_combined_packages_match_training_time_scores_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    matches_training_time(trained_supervised(dir.path(), false));
    matches_training_time(trained_supervised(dir.path(), true));
}

fn matches_training_time(model: TrainedModel) {
    let pkg = exported(&model, Precision::Fp32);
    assert_eq!(pkg.manifest.threshold, model.threshold.value);
    let reference: Vec<Scored> = Scorer::new(model).unwrap().score(&images(), &|_| ()).unwrap();
    for ((score, map), want) in tract_outputs(&pkg, &images()).iter().zip(&reference) {
        let e = map_error(map, &want.map);
        assert!(e <= 1e-4, "map differs by {e} of its peak");
        assert!(
            (score - want.score).abs() <= 1e-4 * want.score.abs().max(1.0),
            "score {score} vs {}",
            want.score
        );
    }
}

#[test]
fn a_model_without_a_finite_threshold_is_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = trained(dir.path());
    model.threshold.value = f32::INFINITY;
    match kensa_core::export::package(&model, Precision::Fp32, Vec::new()) {
        Err(kensa_core::Error::Invalid(m)) => assert!(m.contains("no decision threshold"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.map(|p| p.manifest.threshold)),
    }
}

#[test]
fn int8_weight_package_is_a_quarter_the_size_and_scores_close_to_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained(dir.path());
    let fp32 = exported(&model, Precision::Fp32);
    let q = exported(&model, Precision::Int8Weights);
    let ratio = q.to_bytes().len() as f64 / fp32.to_bytes().len() as f64;
    assert!(ratio <= 0.30, "int8-weights package is {:.0} % of fp32", 100.0 * ratio);
    for ((qs, qm), (fs, fm)) in tract_outputs(&q, &images()).iter().zip(&tract_outputs(&fp32, &images())) {
        // Documented tolerance for int8 weights (docs/benchmarks.md): map within 5 % of
        // its peak, score within 2 %.
        let e = map_error(qm, fm);
        assert!(e <= 0.05, "int8-weights map differs from fp32 by {e} of its peak");
        assert!((qs - fs).abs() <= 0.02 * fs.abs(), "int8-weights score {qs} vs fp32 {fs}");
    }
}

#[test]
fn int8_package_runs_its_convolutions_and_bank_product_on_integers_and_scores_close_to_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained(dir.path());
    let fp32 = exported(&model, Precision::Fp32);
    let q = exported_int8(&model);
    let graph = <tract_onnx::pb::ModelProto as prost::Message>::decode(&q.onnx[..]).unwrap().graph.unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    assert!(count("ConvInteger") >= 10, "only {} ConvInteger in the int8 graph", count("ConvInteger"));
    // The parity model's bank (~1 300 rows) is two slices, each an integer product; no
    // float product touches the bank.
    assert_eq!(count("MatMulInteger"), 2, "the bank product's slices");
    let float_bank =
        graph.node.iter().filter(|n| n.op_type == "MatMul" && n.input.iter().any(|i| i.starts_with("bank.")));
    assert_eq!(float_bank.count(), 0, "a float product of the bank in the int8 graph");
    // Every weight an integer kernel multiplies is u8 (zero point 128), so no runtime
    // meets x86's saturating u8 × s8 pair sums (onnxruntime without VNNI).
    let integer_weights: Vec<&String> = graph
        .node
        .iter()
        .flat_map(|n| match n.op_type.as_str() {
            "ConvInteger" => vec![&n.input[1], &n.input[3]],
            "MatMulInteger" => vec![&n.input[1], &n.input[3]],
            _ => vec![],
        })
        .collect();
    assert_eq!(integer_weights.len(), 2 * (count("ConvInteger") + count("MatMulInteger")));
    for name in integer_weights {
        let w = graph.initializer.iter().find(|t| &t.name == name).expect("integer weights are initialisers");
        assert_eq!(w.data_type, tract_onnx::pb::tensor_proto::DataType::Uint8 as i32, "{name} is not u8");
    }
    let ratio = q.to_bytes().len() as f64 / fp32.to_bytes().len() as f64;
    for ((qs, qm), (fs, fm)) in tract_outputs(&q, &images()).iter().zip(&tract_outputs(&fp32, &images())) {
        let e = map_error(qm, fm);
        eprintln!("int8: map error {e:.4}, score {qs} vs {fs}, size {ratio:.2}");
        // Documented tolerance for int8 (docs/benchmarks.md).
        assert!(e <= 0.08, "int8 map differs from fp32 by {e} of its peak");
        assert!((qs - fs).abs() <= 0.05 * fs.abs(), "int8 score {qs} vs fp32 {fs}");
    }
}

/// onnxruntime (Python, from PyPI via tools/onnxruntime/env.sh) runs every flavour's
/// graph, PatchCore, PaDiM and combined with a classifier: it passes the ONNX checker and agrees with tract within 1e-4.
/// Needs python3 with venv: a machine without it is told so and the check is skipped,
/// except under CI (`CI` set), where `.ci/deps` installs it. One test on purpose: the
/// venv, the six packages and the emulated-CPU run are set up once for all checks.
#[test]
fn onnxruntime_and_the_onnx_checker_agree_with_tract() {
    let has_venv =
        Command::new("python3").args(["-m", "venv", "--help"]).output().is_ok_and(|o| o.status.success());
    if !has_venv {
        skipped_outside_ci("onnxruntime parity", "python3 -m venv (apt-get install python3-venv)");
        return;
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/onnxruntime");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ort-venv");
    let env = Command::new("bash").arg(tools.join("env.sh")).arg(&venv).output().unwrap();
    assert!(
        env.status.success(),
        "could not set up onnxruntime from PyPI: {}",
        String::from_utf8_lossy(&env.stderr)
    );
    let python = String::from_utf8(env.stdout).unwrap().trim().to_string();

    let dir = tempfile::tempdir().unwrap();
    let model = trained(dir.path());
    let imgs = images();
    let padim = trained_with(dir.path(), Method::Padim { channels: 40 });
    let pkgs = [
        ("fp32", exported(&model, Precision::Fp32)),
        ("int8w", exported(&model, Precision::Int8Weights)),
        ("padim-fp32", exported(&padim, Precision::Fp32)),
        ("padim-int8w", exported(&padim, Precision::Int8Weights)),
        ("combined-fp32", exported(&trained_supervised(dir.path(), true), Precision::Fp32)),
        ("int8", exported_int8(&model)),
    ];
    let pre = pkgs[0].1.manifest.preprocess;
    let mut inputs = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        let path = dir.path().join(format!("in{i}.u8"));
        std::fs::write(&path, pre.apply(img).iter().map(|&v| v as u8).collect::<Vec<u8>>()).unwrap();
        inputs.push(path);
    }
    let script = tools.join("kensa_ort.py");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(&python).arg(&script).args(args).output().unwrap();
        assert!(out.status.success(), "kensa_ort.py {:?}: {}", args, String::from_utf8_lossy(&out.stderr));
    };
    let read_f32 = |p: &Path| -> Vec<f32> {
        std::fs::read(p)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    for (name, pkg) in &pkgs {
        let onnx = dir.path().join(format!("{name}.onnx"));
        std::fs::write(&onnx, &pkg.onnx).unwrap();
        run(&["check".as_ref(), onnx.as_os_str()]);
        let mut args = vec!["run".as_ref(), onnx.as_os_str()];
        args.extend(inputs.iter().map(|p| p.as_os_str()));
        args.extend(["--out".as_ref(), dir.path().as_os_str()]);
        run(&args);
        for (i, (score, map)) in tract_outputs(pkg, &imgs).iter().enumerate() {
            let ort_map = read_f32(&dir.path().join(format!("{name}.in{i}.map")));
            let ort_score = read_f32(&dir.path().join(format!("{name}.in{i}.score")))[0];
            let e = map_error(&ort_map, map);
            eprintln!("{name} image {i}: ort vs tract map {e:.2e}, score {ort_score} vs {score}");
            // Float graphs agree to rounding; an int8 one may requantise a value to the
            // neighbouring level in one runtime and not the other.
            let tol = if pkg.manifest.precision == Precision::Int8 { 2e-2 } else { 1e-4 };
            assert!(e <= tol, "{name} image {i}: onnxruntime map differs from tract by {e} of its peak");
            assert!(
                (ort_score - score).abs() <= tol * score.abs().max(1.0),
                "{name} image {i}: onnxruntime score {ort_score} vs tract {score}"
            );
        }
    }

    // The int8 graph once scored differently on CPUs without VNNI, where onnxruntime's
    // u8 × s8 kernels saturate. Whatever CPU runs this test, run onnxruntime again on an
    // emulated AVX2-only AMD EPYC (qemu-user's `-cpu EPYC-Rome`): it must compute what
    // the native run computed.
    let Ok(qemu) = which("qemu-x86_64") else {
        skipped_outside_ci("int8 on an emulated AVX2-only CPU", "qemu-x86_64 (apt-get install qemu-user)");
        return;
    };
    let avx2 = dir.path().join("avx2");
    std::fs::create_dir_all(&avx2).unwrap();
    let onnx = dir.path().join("int8.onnx");
    let out = Command::new(qemu)
        .args(["-cpu", "EPYC-Rome"])
        .arg(&python)
        .arg(&script)
        .arg("run")
        .arg(&onnx)
        .args(&inputs)
        .arg("--out")
        .arg(&avx2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnxruntime on an emulated EPYC-Rome: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..inputs.len() {
        let native = read_f32(&dir.path().join(format!("int8.in{i}.map")));
        let emulated = read_f32(&avx2.join(format!("int8.in{i}.map")));
        let e = map_error(&emulated, &native);
        eprintln!("int8 image {i}: onnxruntime AVX2-only vs this CPU: map {e:.2e}");
        assert!(
            e <= 1e-5,
            "int8 image {i}: onnxruntime on an AVX2-only CPU differs by {e} of the map's peak"
        );
    }
}

/// A check that needs a tool the machine lacks is skipped with a message, except under
/// CI (`CI` set), where `.ci/deps` installs the tool and skipping would hide a failure.
fn skipped_outside_ci(check: &str, missing: &str) {
    assert!(std::env::var_os("CI").is_none(), "CI must run the {check} check, but {missing} is missing");
    eprintln!("{missing} not found: the {check} check was skipped");
}

/// The full path of `program` on `PATH`.
fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
