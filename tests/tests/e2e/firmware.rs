//! The box with no hardware: `kensa-fw --sim` runs generated parts through the shipped
//! demo model and a simulated pusher.

use kensa_e2e::{kensa_fw, run_err, run_ok, tempdir};

#[test]
fn simulated_line_inspects_decides_and_fires_for_every_rejected_part() {
    let out =
        run_ok(kensa_fw().args(["--sim", "--parts", "10", "--rate", "2", "--defect-rate", "0.4", "--json"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("part ")).count(), 10, "{stdout}");
    let json = &stdout[stdout.find("{\n").expect("summary JSON")..];
    let s: serde_json::Value = serde_json::from_str(json).unwrap();
    let c = &s["counters"];
    assert_eq!(c["parts"], 10);
    let rejected = c["ng"].as_u64().unwrap() + c["uninspected"].as_u64().unwrap();
    let (fired, merged, late) =
        (s["pulses_fired"].as_u64().unwrap(), c["merged"].as_u64().unwrap(), c["late"].as_u64().unwrap());
    assert_eq!(fired + merged + late, rejected, "every rejected part gets a stroke or is reported: {json}");
    assert!(c["ng"].as_u64().unwrap() >= 1, "no defective part rejected: {json}");
    assert_eq!(s["with_truth"], 10);
    assert!(s["correct"].as_u64().unwrap() >= 8, "{json}");
}

#[test]
fn a_bad_config_or_model_stops_the_box_with_the_reason() {
    let dir = tempdir();
    let cfg = dir.path().join("box.toml");
    std::fs::write(
        &cfg,
        "[camera]\nsource = \"synthetic\"\nrate_hz = 5\ndefect_rate = 0.1\n[model]\npath = \"m.kpkg\"\n\
         [belt]\ndelay_ms = 500\npulse_ms = 0\n",
    )
    .unwrap();
    let err = run_err(kensa_fw().arg("--config").arg(&cfg));
    assert!(err.contains("belt.pulse_ms") && err.contains("box.toml"), "{err}");

    let model = dir.path().join("truncated.kpkg");
    let demo = std::fs::read(kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg")).unwrap();
    std::fs::write(&model, &demo[..demo.len() / 2]).unwrap();
    // A package that does not load is refused by name; the box falls back to the model
    // it would run without it and inspects.
    let out = run_ok(kensa_fw().args(["--sim", "--parts", "1", "--model"]).arg(&model));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated.kpkg") && err.contains("package is truncated"), "{err}");
    assert!(err.contains("running the fallback model built-in demo model"), "{err}");
}

#[test]
fn sigterm_ends_the_run_cleanly_with_a_summary() {
    let child = kensa_fw()
        .args(["--sim", "--parts", "1000", "--rate", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kensa-fw");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status =
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let parts = stdout.lines().filter(|l| l.starts_with("part ")).count();
    assert!((1..1000).contains(&parts), "{parts} parts before the stop");
    assert!(stdout.contains(&format!("{parts} parts in")), "summary missing: {stdout}");
}
