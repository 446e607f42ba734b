//! Changing a box in the field over its serial line: firmware flashed on trial and rolled
//! back, signatures required, settings that outlive a restart, and a box killed at every
//! step of committing a flashed model. Real `kensa` and `kensa-fw` processes over a pty.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kensa_e2e::line::{SerialLine, count, diag, diag_if_up};
use kensa_e2e::{Running, eventually, kensa, kensa_fw, run_ok};

/// The simulated line serving `line`, keeping its state in `store`.
fn box_command(line: &SerialLine, store: &Path) -> Command {
    let mut cmd = kensa_fw();
    cmd.args(["--sim", "--parts", "100000", "--rate", "5", "--defect-rate", "0.5", "--serial"])
        .arg(&line.box_port)
        .arg("--store")
        .arg(store);
    cmd
}

fn start(cmd: &mut Command) -> Running {
    kensa_e2e::start_quiet(cmd)
}

/// `kensa flash <line> <args>`: whether it succeeded, and its stdout and stderr.
fn flash(line: &SerialLine, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = kensa().arg("flash").arg(&line.host_port).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `kensa flash --firmware`, expected to be refused; what it said.
fn refused_firmware(line: &SerialLine, binary: &Path) -> String {
    let (ok, text) = flash(line, &["--firmware".as_ref(), binary.as_os_str()]);
    assert!(!ok, "flashing {} unexpectedly succeeded: {text}", binary.display());
    text
}

/// `kensa diag info`, once the box answers (it may be restarting).
fn info_when_up(line: &SerialLine) -> String {
    let mut info = None;
    let up = eventually(60, || {
        let out = kensa().arg("diag").arg(&line.host_port).arg("info").output().unwrap();
        out.status.success().then(|| info = Some(String::from_utf8_lossy(&out.stdout).into_owned())).is_some()
    });
    assert!(up, "the box on {} never answered", line.host_port.display());
    info.unwrap()
}

/// The value after `key` on the line of `text` that starts with it.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in {text}"));
    line[key.len()..].trim()
}

fn sha256_of(path: &Path) -> String {
    kensa_shared::sha256_hex(&std::fs::read(path).unwrap())
}

/// A copy of the firmware shim made distinct by `tag` (a different build), stripped so
/// that it flashes in seconds.
fn firmware_build(dir: &Path, tag: &str) -> PathBuf {
    let path = dir.join(format!("kensa-fw-{tag}"));
    std::fs::copy(kensa_e2e::firmware_shim(), &path).unwrap();
    let _ = Command::new("strip").arg(&path).status();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(format!("\nbuild {tag}\n").as_bytes());
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn firmware_is_flashed_on_trial_kept_when_healthy_and_rolled_back_when_not() {
    let dir = kensa_e2e::tempdir();
    let p = |name: &str| dir.path().join(name);
    let store = p("store");
    run_ok(kensa().arg("keygen").arg("--out").arg(p("line3")));
    // The box accepts only what this key signed, its own model included.
    let seed =
        kensa_shared::package::parse_key_hex(&std::fs::read_to_string(p("line3.key")).unwrap()).unwrap();
    let demo = std::fs::read(kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg")).unwrap();
    let mut pkg = kensa_shared::package::Package::from_bytes(&demo).unwrap();
    pkg.sign(&ed25519_dalek::SigningKey::from_bytes(&seed));
    std::fs::write(p("signed.kpkg"), pkg.to_bytes()).unwrap();

    let line = SerialLine::new();
    let supervised = |line: &SerialLine| {
        let mut cmd = box_command(line, &store);
        cmd.arg("--supervise").arg("--health-timeout").arg("30");
        // Kept after 2 s and 3 scored parts on trial (a box in the field: 30 s, 10 parts).
        cmd.args(["--trial-seconds", "2", "--trial-parts", "3"]);
        cmd.arg("--model").arg(p("signed.kpkg")).arg("--trust").arg(p("line3.pub"));
        cmd.env("KENSA_E2E_DAEMON", kensa_e2e::kensa_fw_path());
        Running(
            cmd.stdout(std::fs::File::create(p("supervisor.log")).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let sup = supervised(&line);
    let info = info_when_up(&line);
    assert!(info.contains(&sha256_of(&kensa_e2e::kensa_fw_path())), "the installed firmware runs: {info}");
    assert_eq!(field(&info, "          "), "supervised");

    // Unsigned, and signed but altered afterwards: refused, and nothing restarts.
    let fw1 = firmware_build(dir.path(), "1");
    let err = refused_firmware(&line, &fw1);
    assert!(err.contains("firmware is not signed"), "{err}");
    run_ok(kensa().arg("sign").arg(&fw1).arg("--key").arg(p("line3.key")));
    let altered = p("kensa-fw-altered");
    let mut bytes = std::fs::read(&fw1).unwrap();
    bytes.push(0);
    std::fs::write(&altered, bytes).unwrap();
    std::fs::copy(p("kensa-fw-1.sig"), p("kensa-fw-altered.sig")).unwrap();
    let err = refused_firmware(&line, &altered);
    assert!(err.contains("firmware signature does not verify"), "{err}");
    // Unsigned models are refused by this box as well.
    let (ok, err) =
        flash(&line, &[kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg").as_os_str()]);
    assert!(!ok && err.contains("not signed"), "{err}");
    assert!(diag(&line, &["info"]).contains(&sha256_of(&kensa_e2e::kensa_fw_path())), "nothing restarted");

    // Signed: the box restarts into it on trial, it inspects, it stays.
    let (ok, out) = flash(&line, &["--firmware".as_ref(), fw1.as_os_str()]);
    assert!(ok && out.contains("reported healthy"), "{out}");
    let info = info_when_up(&line);
    assert!(info.contains(&sha256_of(&fw1)) && field(&info, "          ") == "supervised", "{info}");
    assert_eq!(std::fs::read_to_string(store.join("firmware/active")).unwrap().trim(), "a");

    // A signed build that never inspects (it exits at once): rolled back to build 1.
    let broken = p("kensa-fw-broken");
    std::fs::copy("/bin/false", &broken).unwrap();
    run_ok(kensa().arg("sign").arg(&broken).arg("--key").arg(p("line3.key")));
    let err = refused_firmware(&line, &broken);
    assert!(err.contains("did not prove healthy") && err.contains("previous firmware"), "{err}");
    let info = info_when_up(&line);
    assert!(info.contains(&sha256_of(&fw1)), "back on build 1: {info}");
    let parts = count(&diag(&line, &["status"]), "parts ");
    diag(&line, &["watch", "--count", "2"]);
    assert!(count(&diag(&line, &["status"]), "parts ") > parts, "inspecting again");
    let log = std::fs::read_to_string(p("supervisor.log")).unwrap();
    assert!(log.contains("firmware b exited with code 1 before its trial ended: rolled back"), "{log}");

    // Power cut: the supervisor is killed outright and started again: build 1 still.
    drop(sup);
    let _sup = supervised(&line);
    assert!(info_when_up(&line).contains(&sha256_of(&fw1)));
}

#[test]
fn saved_settings_outlive_restarts_and_a_threshold_lasts_until_another_model() {
    let dir = kensa_e2e::tempdir();
    let store = dir.path().join("store");
    let line = SerialLine::new();
    let fw = start(&mut box_command(&line, &store));
    let model_threshold = field(&diag(&line, &["info"]), "threshold").to_string();

    let out = diag(&line, &["set", "--threshold", "1e9"]);
    assert!(out.contains("saved: kept across restarts"), "{out}");
    let out = diag(&line, &["set", "--delay-ms", "640", "--pulse-ms", "35"]);
    assert!(out.contains("reject    +640.0 ms, 35.0 ms pulse") && out.contains("saved: kept"), "{out}");
    // A delay shorter than the output's lead time cannot be honoured: refused, not saved.
    let err = kensa_e2e::run_err(kensa().arg("diag").arg(&line.host_port).args(["set", "--delay-ms", "1"]));
    assert!(err.contains("lead time"), "{err}");
    assert!(diag(&line, &["restart"]).contains("restarting"));
    // The pipeline comes back (a new session, the same process) with the saved threshold.
    let info = info_when_up(&line);
    assert_eq!(field(&info, "threshold"), "1000000000.0000 (saved over the link)", "{info}");
    assert_eq!(field(&info, "reject"), "+640.0 ms, 35.0 ms pulse (saved over the link)", "{info}");
    let parts = count(&diag(&line, &["status"]), "parts ");
    diag(&line, &["watch", "--count", "2"]);
    assert!(count(&diag(&line, &["status"]), "parts ") > parts, "inspecting after the restart");

    // The box keeps a few camera frames to self-test the next model it is flashed with.
    assert!(store.join("samples/sample-0.png").is_file());
    drop(fw);
    let _fw = start(&mut box_command(&line, &store));
    assert_eq!(field(&info_when_up(&line), "threshold"), "1000000000.0000 (saved over the link)");

    // Another model brings its own threshold.
    let demo = std::fs::read(kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg")).unwrap();
    let mut pkg = kensa_shared::package::Package::from_bytes(&demo).unwrap();
    pkg.manifest.threshold = 7.5;
    let other = dir.path().join("other.kpkg");
    std::fs::write(&other, pkg.to_bytes()).unwrap();
    run_ok(kensa().arg("flash").arg(&line.host_port).arg(&other));
    let switched = eventually(30, || field(&diag(&line, &["info"]), "threshold") == "7.5000");
    assert!(switched, "the flashed model's own threshold never took over");
    let info = diag(&line, &["info"]);
    assert_eq!(field(&info, "reject"), "+640.0 ms, 35.0 ms pulse (saved over the link)", "kept: {info}");
    assert_ne!(model_threshold, "7.5000");

    // With no store nothing can be saved, and the technician is told so.
    let bare_line = SerialLine::new();
    let mut bare = kensa_fw();
    bare.args(["--sim", "--parts", "100000", "--serial"]).arg(&bare_line.box_port);
    let _bare = start(&mut bare);
    info_when_up(&bare_line);
    assert!(diag(&bare_line, &["set", "--threshold", "3"]).contains("not saved"));
}

#[test]
fn a_box_killed_at_any_step_of_a_commit_comes_back_inspecting_with_the_old_or_the_new_model() {
    let dir = kensa_e2e::tempdir();
    let demo = std::fs::read(kensa_e2e::repo_root().join("models/demo_brushed_metal.kpkg")).unwrap();
    let mut pkg = kensa_shared::package::Package::from_bytes(&demo).unwrap();
    // A threshold far above every score the export measured: allowed only without
    // that measurement.
    pkg.manifest.threshold = 1e9;
    pkg.manifest.scores_measured = None;
    let lenient = dir.path().join("lenient.kpkg");
    std::fs::write(&lenient, pkg.to_bytes()).unwrap();
    let old = format!("{:.4}", kensa_shared::package::Package::from_bytes(&demo).unwrap().manifest.threshold);

    for (step, expect_new) in
        [("verified", false), ("slot-written", false), ("switched", true), ("cleaned-up", true)]
    {
        let store = dir.path().join(format!("store-{step}"));
        let stderr = dir.path().join(format!("box-{step}.err"));
        let line = SerialLine::new();
        let mut cmd = box_command(&line, &store);
        cmd.env("KENSA_FW_HOLD_AT", step);
        let fw = Running(
            cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap(),
        );
        info_when_up(&line);
        let host = Running(
            kensa()
                .arg("flash")
                .arg(&line.host_port)
                .arg(&lenient)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let held = eventually(120, || {
            std::fs::read_to_string(&stderr)
                .unwrap_or_default()
                .contains(&format!("holding at commit step {step}"))
        });
        assert!(held, "{step}: the box never reached the step");
        drop(fw); // SIGKILL, right there
        drop(host);

        let _fw = start(&mut box_command(&line, &store));
        let threshold = field(&info_when_up(&line), "threshold").to_string();
        let want = if expect_new { "1000000000.0000" } else { old.as_str() };
        assert_eq!(threshold, want, "killed after {step}");
        let parts = count(&diag(&line, &["status"]), "parts ");
        diag(&line, &["watch", "--count", "2"]);
        assert!(count(&diag(&line, &["status"]), "parts ") > parts, "{step}: inspecting after the restart");
        // And the upload can be finished (or is already done).
        let out = run_ok(kensa().arg("flash").arg(&line.host_port).arg(&lenient));
        assert!(String::from_utf8_lossy(&out.stdout).contains("the box now runs"), "{step}");
    }
}

#[test]
fn a_kept_firmware_that_crash_loops_goes_back_to_the_firmware_before_it() {
    let dir = kensa_e2e::tempdir();
    let store = dir.path().join("store");
    let line = SerialLine::new();
    let log = dir.path().join("supervisor.log");
    let mut cmd = box_command(&line, &store);
    cmd.args(["--supervise", "--trial-seconds", "2", "--trial-parts", "3"]);
    cmd.env("KENSA_E2E_DAEMON", kensa_e2e::kensa_fw_path());
    let _sup =
        Running(cmd.stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null()).spawn().unwrap());
    let installed = sha256_of(&kensa_e2e::kensa_fw_path());
    assert!(info_when_up(&line).contains(&installed));

    // Passes its trial (healthy for 2 s and 3 parts), then fails 8 s after every start.
    let crashing = firmware_build(dir.path(), "crash");
    let mut bytes = std::fs::read(&crashing).unwrap();
    bytes.extend_from_slice(b"crash after 8 s\n");
    std::fs::write(&crashing, bytes).unwrap();
    let (ok, out) = flash(&line, &["--firmware".as_ref(), crashing.as_os_str()]);
    assert!(ok && out.contains("reported healthy"), "{out}");
    assert_eq!(std::fs::read_to_string(store.join("firmware/active")).unwrap().trim(), "a", "kept");

    // Three failures within the window: the installed firmware runs again, for good.
    let back =
        eventually(120, || std::fs::read_to_string(&log).unwrap_or_default().contains("of its promotion"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(back, "no roll-back after a crash loop:\n{text}");
    assert_eq!(text.matches("firmware a exited with code 101").count(), 3, "{text}");
    assert!(
        eventually(60, || diag_if_up(&line, &["info"]).is_some_and(|i| i.contains(&installed))),
        "{text}"
    );
    assert!(!store.join("firmware/active").exists(), "no flashed firmware is active any more");
}
