//! The first promise, tried as a field engineer would, with the real `kensa-fw` and
//! `kensa` over a pseudo-terminal: a part judged NG, or not inspected in time, is pushed
//! or the line is stopped (the run permit off), and the box says why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kensa_e2e::line::{SerialLine, count, diag, diag_if_up};
use kensa_e2e::{eventually, kensa, kensa_fw, repo_root, start_quiet, tempdir};

fn demo() -> PathBuf {
    repo_root().join("models/demo_brushed_metal.kpkg")
}

/// A box configuration: `camera` and `belt` TOML bodies, `extra` appended as is.
fn config(dir: &Path, camera: &str, belt: &str, extra: &str) -> PathBuf {
    let path = dir.join("box.toml");
    let text = format!(
        "[camera]\n{camera}\n[model]\npath = \"{}\"\nstore = \"{}\"\n[belt]\n{belt}\n{extra}\n",
        dir.join("installed.kpkg").display(),
        dir.join("store").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

const SYNTHETIC: &str = "source = \"synthetic\"\nrate_hz = 5\ndefect_rate = 0.5";

/// Run the box to its end; its summary JSON and exit status.
fn run_json(cmd: &mut std::process::Command) -> (serde_json::Value, bool, String) {
    let out = cmd.arg("--json").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = &stdout[stdout.find("{\n").unwrap_or_else(|| panic!("no summary: {stdout}\n{stderr}"))..];
    (serde_json::from_str(json).unwrap(), out.status.success(), stderr)
}

/// `kensa diag` expected to be refused: its error output.
fn diag_refused(line: &SerialLine, args: &[&str]) -> String {
    let out = kensa().arg("diag").arg(&line.host_port).args(args).output().unwrap();
    assert!(!out.status.success(), "diag {args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_belt_delay_shorter_than_the_model_stops_the_line_and_fails_the_run() {
    let dir = tempdir();
    std::fs::copy(demo(), dir.path().join("installed.kpkg")).unwrap();
    let cfg = config(dir.path(), SYNTHETIC, "delay_ms = 30\npulse_ms = 10", "");
    let (s, ok, stderr) = run_json(kensa_fw().arg("--config").arg(&cfg).args(["--parts", "6"]));
    assert!(!ok, "a run whose NG parts were not pushed must fail: {s}");
    assert_eq!(s["run_permit"], false, "the run permit is off: {s}");
    let alarms = s["alarms"].to_string();
    assert!(alarms.contains("belt delay 30 ms is shorter than the model's p99 latency"), "{alarms}");
    let c = &s["counters"];
    assert_eq!(c["parts"], 6);
    // Every part that had to leave the belt was decided after its slot: none was pushed
    // and none counts as handled.
    let must_leave = c["ng"].as_u64().unwrap() + c["uninspected"].as_u64().unwrap();
    assert!(must_leave >= 1, "{s}");
    assert_eq!(s["unpushed"].as_u64().unwrap(), must_leave, "{s}");
    assert_eq!(s["pulses_fired"], 0, "{s}");
    assert!(s["correct"].as_u64().unwrap() <= 6 - must_leave, "a late NG part is not counted correct: {s}");
    assert!(stderr.contains("line stopped"), "the reason reaches the log at the default level: {stderr}");
}

#[test]
fn a_damaged_active_slot_falls_back_to_the_other_one() {
    let dir = tempdir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut damaged = std::fs::read(demo()).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x01;
    std::fs::write(store.join("slot-a.kpkg"), &damaged).unwrap();
    std::fs::copy(demo(), store.join("slot-b.kpkg")).unwrap();
    std::fs::write(store.join("active"), "a\n").unwrap();
    let cfg = config(dir.path(), SYNTHETIC, "delay_ms = 800\npulse_ms = 60\nmin_gap_ms = 40", "");
    let (s, ok, stderr) = run_json(kensa_fw().arg("--config").arg(&cfg).args(["--parts", "4"]));
    assert!(ok, "{s}\n{stderr}");
    assert!(stderr.contains("slot-a.kpkg") && stderr.contains("model refused"), "{stderr}");
    assert!(stderr.contains("running the fallback model slot-b.kpkg"), "{stderr}");
    let c = &s["counters"];
    assert_eq!(c["ok"].as_u64().unwrap() + c["ng"].as_u64().unwrap(), 4, "every part scored: {s}");
    assert_eq!(s["run_permit"], true, "{s}");
}

#[test]
fn a_box_with_nothing_loadable_stays_reachable_line_stopped_and_is_repaired_by_a_flash() {
    let dir = tempdir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let demo_bytes = std::fs::read(demo()).unwrap();
    std::fs::write(store.join("slot-a.kpkg"), &demo_bytes[..demo_bytes.len() / 3]).unwrap();
    std::fs::write(store.join("active"), "a\n").unwrap();
    // No installed model either. A generous margin makes any model too slow for 100 ms.
    let cfg = config(
        dir.path(),
        SYNTHETIC,
        "delay_ms = 100\npulse_ms = 20",
        "[fail_safe]\nuninspected = \"reject\"\ncamera_timeout_ms = 1000\ncamera_retry_ms = 200\n\
         camera_retry_max_ms = 1000\nlatency_margin_ms = 100",
    );
    let line = SerialLine::new();
    let _fw = start_quiet(kensa_fw().arg("--config").arg(&cfg).arg("--serial").arg(&line.box_port));
    let status = diag(&line, &["status"]);
    assert!(status.contains("run permit OFF"), "{status}");
    assert!(status.contains("ALARM     no model:") && status.contains("slot-a.kpkg"), "{status}");
    assert_eq!(count(&status, "parts "), 0, "a free-running box with no model shows no parts: {status}");
    assert!(diag(&line, &["info"]).contains("model     none"));

    // The demo model cannot decide within 100 ms less a 100 ms margin: refused by name.
    let out = kensa().arg("flash").arg(&line.host_port).arg(demo()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a model too slow for the belt was flashed");
    assert!(err.contains("cannot keep up with the belt") && err.contains("belt delay 100 ms"), "{err}");

    // A longer delay, then the same package: the box inspects again.
    diag(&line, &["set", "--delay-ms", "5000"]);
    let out = kensa().arg("flash").arg(&line.host_port).arg(demo()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        eventually(30, || count(&diag(&line, &["status"]), "parts ") >= 2),
        "no parts after the flash: {}",
        diag(&line, &["status"])
    );
    let status = diag(&line, &["status"]);
    assert!(status.contains("run permit ON") && !status.contains("ALARM"), "{status}");

    // The technician cannot shorten the delay below what the model needs.
    let err = diag_refused(&line, &["set", "--delay-ms", "20"]);
    assert!(err.contains("belt delay 20 ms") && err.contains("p99 latency"), "{err}");
    assert!(diag(&line, &["info"]).contains("reject    +5000.0 ms"));

    // Totals survive a pipeline restart.
    let before = count(&diag(&line, &["status"]), "parts ");
    diag(&line, &["restart"]);
    assert!(eventually(30, || diag_if_up(&line, &["status"]).is_some_and(|s| count(&s, "parts ") >= before)));
}

#[test]
fn a_free_running_box_without_its_camera_stops_the_line_and_pushes_nothing() {
    let dir = tempdir();
    std::fs::copy(demo(), dir.path().join("installed.kpkg")).unwrap();
    let camera =
        "source = \"v4l2\"\ndevice = \"/dev/video9\"\npixel_format = \"YUYV\"\nwidth = 640\nheight = 480";
    let cfg = config(
        dir.path(),
        camera,
        "delay_ms = 800\npulse_ms = 60",
        "[fail_safe]\nuninspected = \"reject\"\ncamera_timeout_ms = 200\ncamera_retry_ms = 100\n\
         camera_retry_max_ms = 200",
    );
    let line = SerialLine::new();
    let _fw = start_quiet(kensa_fw().arg("--config").arg(&cfg).arg("--serial").arg(&line.box_port));
    assert!(eventually(30, || diag_if_up(&line, &["status"]).is_some_and(|s| s.contains("camera down"))));
    // Several retries later: still no part, no stroke, the line held stopped.
    std::thread::sleep(Duration::from_secs(2));
    let status = diag(&line, &["status"]);
    assert_eq!((count(&status, "parts "), count(&status, "rejects ")), (0, 0), "{status}");
    assert!(status.contains("run permit OFF") && status.contains("/dev/video9"), "{status}");
    let logs = diag(&line, &["logs"]);
    assert!(logs.contains("camera down"), "{logs}");
    assert!(status.contains("camera.device in"), "the alarm names the setting to check: {status}");
}

#[test]
fn a_package_with_its_threshold_overwritten_is_refused_and_the_box_keeps_its_model() {
    let dir = tempdir();
    let line = SerialLine::new();
    let _fw = start_quiet(
        kensa_fw()
            .args(["--sim", "--parts", "100000", "--rate", "5", "--serial"])
            .arg(&line.box_port)
            .arg("--store")
            .arg(dir.path().join("store")),
    );
    let before = diag(&line, &["info"]);
    // 1e9 written over the threshold's bytes, as a hex editor would: every debris part
    // would pass.
    let mut bytes = std::fs::read(demo()).unwrap();
    let t = kensa_shared::package::Package::from_bytes(&bytes).unwrap().manifest.threshold;
    let at = bytes.windows(4).position(|w| w == t.to_le_bytes()).unwrap();
    bytes[at..at + 4].copy_from_slice(&1e9f32.to_le_bytes());
    let edited = dir.path().join("edited.kpkg");
    std::fs::write(&edited, &bytes).unwrap();
    let out = kensa().arg("flash").arg(&line.host_port).arg(&edited).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("damaged"), "{err}");
    let after = diag(&line, &["info"]);
    let threshold = |info: &str| info.lines().find(|l| l.starts_with("threshold")).unwrap().to_string();
    assert_eq!(threshold(&after), threshold(&before), "{after}");
    let status = diag(&line, &["status"]);
    assert!(status.contains("run permit ON"), "{status}");
}

#[test]
fn a_store_that_cannot_be_written_is_an_alarm_that_does_not_stop_inspection() {
    let dir = tempdir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // Where camera samples go, a file: every write there fails, as on a full disk.
    std::fs::write(store.join("samples"), b"").unwrap();
    let line = SerialLine::new();
    let _fw = start_quiet(
        kensa_fw()
            .args(["--sim", "--parts", "100000", "--rate", "5", "--serial"])
            .arg(&line.box_port)
            .arg("--store")
            .arg(&store),
    );
    assert!(
        eventually(30, || diag_if_up(&line, &["status"])
            .is_some_and(|s| s.contains("ALARM     store cannot be written"))),
        "{:?}",
        diag_if_up(&line, &["status"])
    );
    let status = diag(&line, &["status"]);
    assert!(status.contains("run permit ON") && status.contains("samples"), "{status}");
    let parts = count(&status, "parts ");
    assert!(eventually(30, || count(&diag(&line, &["status"]), "parts ") > parts), "inspection goes on");
}

/// Damage a copy of the demo package at random: a flipped byte, a cut, or nothing.
fn damaged(rng: &mut u64, bytes: &[u8]) -> (Vec<u8>, bool) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut b = bytes.to_vec();
    match *rng % 3 {
        0 => (b, true),
        1 => {
            let at = (*rng >> 8) as usize % b.len();
            b[at] ^= 1 << ((*rng >> 40) % 8);
            (b, false)
        }
        _ => {
            b.truncate((*rng >> 8) as usize % b.len());
            (b, false)
        }
    }
}

#[test]
fn whatever_its_store_holds_the_box_starts_and_runs_only_an_intact_package() {
    let demo_bytes = std::fs::read(demo()).unwrap();
    let int8 = std::fs::read(repo_root().join("models/demo_brushed_metal.int8.kpkg")).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..8 {
        let dir = tempdir();
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        let (a, a_ok) = damaged(&mut rng, &demo_bytes);
        let (b, b_ok) = damaged(&mut rng, &int8);
        std::fs::write(store.join("slot-a.kpkg"), &a).unwrap();
        std::fs::write(store.join("slot-b.kpkg"), &b).unwrap();
        let active = if rng.is_multiple_of(2) { "a" } else { "b" };
        std::fs::write(store.join("active"), format!("{active}\n")).unwrap();
        // No installed model: with both slots damaged there is nothing to run.
        let cfg = config(dir.path(), SYNTHETIC, "delay_ms = 800\npulse_ms = 60\nmin_gap_ms = 40", "");
        let (s, _, stderr) = run_json(kensa_fw().arg("--config").arg(&cfg).args(["--parts", "3"]));
        let what = format!("round {round}: slot a intact {a_ok}, slot b intact {b_ok}, active {active}");
        let banner_ok = a_ok || b_ok;
        let c = &s["counters"];
        if banner_ok {
            let want = match (active, a_ok, b_ok) {
                ("a", true, _) | ("b", true, false) => "slot-a.kpkg",
                _ => "slot-b.kpkg",
            };
            assert!(stderr.contains(&format!("model {want} loaded")), "{what}: {stderr}");
            assert_eq!(c["ok"].as_u64().unwrap() + c["ng"].as_u64().unwrap(), 3, "{what}: {s}");
            assert_eq!(s["run_permit"], true, "{what}: {s}");
        } else {
            assert!(stderr.contains("model refused"), "{what}: {stderr}");
            assert_eq!((c["parts"].as_u64(), s["pulses_fired"].as_u64()), (Some(0), Some(0)), "{what}: {s}");
            assert_eq!(s["run_permit"], false, "{what}: {s}");
        }
    }
}
