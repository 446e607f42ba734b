//! `kensa diag` against a running `kensa-fw`, both real processes, over a pseudo-terminal
//! line that can be made noisy.

use std::process::Stdio;
use std::sync::atomic::Ordering;

use kensa_e2e::line::{SerialLine, count, diag};
use kensa_e2e::{Running, kensa, kensa_fw, run_ok};

/// A box on the simulated conveyor serving diagnostics on `line`, flashing into `store`
/// when given.
fn start_box_with(line: &SerialLine, store: Option<&std::path::Path>) -> Running {
    let mut cmd = kensa_fw();
    cmd.args(["--sim", "--parts", "100000", "--rate", "5", "--defect-rate", "0.5", "--serial"])
        .arg(&line.box_port);
    if let Some(dir) = store {
        cmd.arg("--store").arg(dir);
    }
    Running(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

fn start_box(line: &SerialLine) -> Running {
    start_box_with(line, None)
}

#[test]
fn a_technician_sees_and_steers_a_running_box() {
    let line = SerialLine::new();
    let _fw = start_box(&line);

    let info = diag(&line, &["info"]);
    assert!(info.contains("model     patchcore 256x256"), "{info}");
    assert!(info.contains("synthetic conveyor") && info.contains("line      running"), "{info}");
    // What runs, from where, and what the box accepts: the demo package, unsigned, any.
    let demo = kensa_shared::package::Package::from_bytes(
        &std::fs::read(kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg")).unwrap(),
    )
    .unwrap();
    assert!(info.contains(&format!("graph sha256 {}", demo.manifest.onnx_sha256)), "{info}");
    assert!(info.contains("Fp32 from built-in demo model") && info.contains("unsigned"), "{info}");
    assert!(info.contains("accepts any intact package"), "{info}");

    let watch = diag(&line, &["watch", "--count", "5"]);
    let parts: Vec<&str> = watch.lines().filter(|l| l.starts_with("part ")).collect();
    assert_eq!(parts.len(), 5, "{watch}");
    // Every decision is streamed, parts lost to an overrun (slow debug builds) included.
    assert!(parts.iter().all(|l| ["OK", "NG", "UNINSPECTED"].iter().any(|v| l.contains(v))), "{watch}");

    let before = diag(&line, &["status"]);
    assert!(count(&before, "parts ") >= 5, "{before}");

    // A threshold every score reaches: every scored part is NG and keeps a thumbnail.
    diag(&line, &["set", "--threshold", "-1e9"]);
    diag(&line, &["watch", "--count", "3"]);
    let dir = kensa_e2e::tempdir();
    let out = diag(&line, &["last-ng", "--max", "2", "-o", dir.path().to_str().unwrap()]);
    let pngs: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!pngs.is_empty(), "no thumbnail saved: {out}");
    let thumb = image::open(&pngs[0]).unwrap();
    assert!(thumb.width() <= 64 && thumb.height() <= 64);

    // A threshold no score reaches: every part passes from now on.
    diag(&line, &["set", "--threshold", "1e9"]);
    assert!(diag(&line, &["info"]).contains("threshold 1000000000"));
    let ng_before = count(&diag(&line, &["status"]), "NG ");
    diag(&line, &["watch", "--count", "4"]);
    assert_eq!(count(&diag(&line, &["status"]), "NG "), ng_before, "no NG after raising the threshold");

    assert!(diag(&line, &["test-reject"]).contains("fired"));
    let snap = dir.path().join("now.png");
    assert!(diag(&line, &["snapshot", "-o", snap.to_str().unwrap()]).contains("part "));
    assert_eq!(image::open(&snap).unwrap().width(), 64, "the synthetic conveyor's 256 px frame, shrunk");
    // The threshold change was logged, and the log reaches the technician.
    let logs = diag(&line, &["logs"]);
    assert!(logs.contains("decision threshold changed"), "{logs}");
}

#[test]
fn a_noisy_line_costs_retries_not_answers() {
    let line = SerialLine::new();
    let _fw = start_box(&line);
    diag(&line, &["info"]);
    // About one byte in 500 flipped and one in 1000 lost, both ways.
    line.flip_ppm.store(2_000, Ordering::Relaxed);
    line.drop_ppm.store(1_000, Ordering::Relaxed);
    for _ in 0..10 {
        let status = diag(&line, &["status"]);
        assert!(status.starts_with("parts "), "{status}");
    }
    // Garbage alone on the line does not wedge the box's decoder.
    line.flip_ppm.store(0, Ordering::Relaxed);
    line.drop_ppm.store(0, Ordering::Relaxed);
    std::fs::write(&line.host_port, b"\xff\x13garbage without a delimiter").unwrap();
    assert!(diag(&line, &["info"]).contains("kensa-fw"));
}

#[test]
fn a_box_that_is_not_there_is_named() {
    let line = SerialLine::new();
    let out = kensa().arg("diag").arg(&line.host_port).arg("info").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&line.host_port.display().to_string()) && err.contains("no answer"), "{err}");
}

fn start_box_with_store(line: &SerialLine, store: &std::path::Path) -> Running {
    start_box_with(line, Some(store))
}

#[test]
fn a_model_flashed_over_the_line_changes_decisions_and_survives_a_kill() {
    let dir = kensa_e2e::tempdir();
    let store = dir.path().join("store");
    // The demo model with a threshold no part reaches: once it runs, nothing is NG.
    let demo = std::fs::read(kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg")).unwrap();
    let mut pkg = kensa_shared::package::Package::from_bytes(&demo).unwrap();
    // A threshold far above every score the export measured: allowed only without
    // that measurement.
    pkg.manifest.threshold = 1e9;
    pkg.manifest.scores_measured = None;
    let lenient = dir.path().join("lenient.kpkg");
    std::fs::write(&lenient, pkg.to_bytes()).unwrap();

    let line = SerialLine::new();
    let fw = start_box_with_store(&line, &store);
    // Pull the cable mid-upload: the host is killed after a moment...
    let mut first =
        kensa().arg("flash").arg(&line.host_port).arg(&lenient).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = first.kill();
    let _ = first.wait();
    // ...and the second run resumes (or finds the upload done) and switches the model.
    let out =
        String::from_utf8_lossy(&run_ok(kensa().arg("flash").arg(&line.host_port).arg(&lenient)).stdout)
            .into_owned();
    assert!(out.contains("the box now runs patchcore 256x256"), "{out}");
    // The new model takes over at the next part it scores, and its threshold with it
    // (parts already scored, or lost to an overrun, are still judged by the old one).
    let switched = (0..30).any(|_| {
        diag(&line, &["watch", "--count", "1"]);
        diag(&line, &["info"]).contains("threshold 1000000000")
    });
    assert!(switched, "the flashed model's threshold never took over");
    let ng = count(&diag(&line, &["status"]), "NG ");
    diag(&line, &["watch", "--count", "5"]);
    assert_eq!(count(&diag(&line, &["status"]), "NG "), ng, "the flashed model passes every part");

    // Killed outright and restarted: it comes back with the flashed model.
    drop(fw);
    let _fw = start_box_with_store(&line, &store);
    assert!(diag(&line, &["info"]).contains("threshold 1000000000"));
}

#[test]
fn a_damaged_upload_is_refused_and_the_box_keeps_its_model() {
    let dir = kensa_e2e::tempdir();
    let demo = std::fs::read(kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg")).unwrap();
    // A valid package whose graph does not load: tract refuses it at commit.
    let mut pkg = kensa_shared::package::Package::from_bytes(&demo).unwrap();
    pkg.onnx.truncate(pkg.onnx.len() / 3);
    pkg.manifest.onnx_sha256 = kensa_shared::sha256_hex(&pkg.onnx);
    let broken = dir.path().join("broken.kpkg");
    std::fs::write(&broken, pkg.to_bytes()).unwrap();
    let line = SerialLine::new();
    let _fw = start_box_with_store(&line, &dir.path().join("store"));
    let before = diag(&line, &["info"]);
    let out = kensa().arg("flash").arg(&line.host_port).arg(&broken).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.contains("flashed package"), "{err}");
    assert_eq!(diag(&line, &["info"]).lines().nth(3), before.lines().nth(3), "threshold unchanged");
    assert!(diag(&line, &["status"]).starts_with("parts "), "still inspecting");
}

/// Upload throughput as a share of the line rate, on a relay imitating 115 200 baud and
/// 3 Mbaud. A benchmark, not a check: `cargo test --release -p kensa-e2e flash_throughput
/// -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: minutes at 115 200 baud"]
fn flash_throughput() {
    let dir = kensa_e2e::tempdir();
    let data = dir.path().join("data");
    kensa_e2e::synth_small(&data, 8, 2, 2);
    let model = dir.path().join("m.kmodel");
    run_ok(
        kensa()
            .args(["train", "--size", "64", "--coreset", "0.05", "--data"])
            .arg(&data)
            .arg("-o")
            .arg(&model),
    );
    let pkg = dir.path().join("m.kpkg");
    run_ok(
        kensa()
            .args(["export", "--precision", "int8-weights", "--accept-accuracy-drop", "-m"])
            .arg(&model)
            .arg("-o")
            .arg(&pkg),
    );
    let size = std::fs::metadata(&pkg).unwrap().len();
    let line = SerialLine::new();
    let _fw = start_box_with_store(&line, &dir.path().join("store"));
    diag(&line, &["info"]);
    for baud in [115_200u32, 3_000_000] {
        line.baud.store(baud, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let out = run_ok(kensa().arg("flash").arg(&line.host_port).arg(&pkg));
        let secs = started.elapsed().as_secs_f64();
        let rate = size as f64 / secs;
        println!(
            "{baud} baud: {size} bytes in {secs:.1} s = {rate:.0} B/s, {:.0} % of the line's {} B/s ({})",
            100.0 * rate / (baud as f64 / 10.0),
            baud / 10,
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}

#[test]
fn a_box_killed_mid_upload_resumes_the_upload_after_restarting() {
    let dir = kensa_e2e::tempdir();
    let store = dir.path().join("store");
    let demo = kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg");
    let line = SerialLine::new();
    let fw = start_box_with_store(&line, &store);
    diag(&line, &["info"]); // up and answering
    line.baud.store(115_200, Ordering::Relaxed);
    let mut host =
        kensa().arg("flash").arg(&line.host_port).arg(&demo).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    drop(fw); // SIGKILL in the middle of the upload
    let _ = host.kill();
    let _ = host.wait();
    line.baud.store(0, Ordering::Relaxed);
    let _fw = start_box_with_store(&line, &store);
    let out = String::from_utf8_lossy(&run_ok(kensa().arg("flash").arg(&line.host_port).arg(&demo)).stdout)
        .into_owned();
    let at: u64 = out
        .split("resuming at byte ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the upload started over: {out}"));
    assert!(at > 4096, "{out}");
    assert!(out.contains("the box now runs patchcore 256x256"), "{out}");
}
