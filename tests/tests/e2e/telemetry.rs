//! Fleet telemetry on a real broker: simulated boxes publish Sparkplug B to Debian's
//! mosquitto, an independent decoder (pysparkplug) reads every message, and the broker
//! and a box fail on the way.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kensa_e2e::broker::{Broker, Listener, mosquitto_installed, sparkplug_python};
use kensa_e2e::line::{SerialLine, count, diag};
use kensa_e2e::{kensa, kensa_fw, tempdir};
use serde_json::Value;

const GROUP: &str = "e2e-plant";

fn skipped_outside_ci(missing: &str) {
    assert!(std::env::var_os("CI").is_none(), "CI must run the telemetry test, but {missing} is missing");
    eprintln!("{missing} not found: the telemetry test was skipped");
}

/// A `kensa-fw --sim` process and the lines it printed.
struct SimBox {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl SimBox {
    fn start(args: &[&str], store: Option<&Path>, broker: Option<(&Broker, &str)>) -> Self {
        let mut cmd = kensa_fw();
        cmd.arg("--sim").args(args).arg("--json");
        if let Some(s) = store {
            cmd.arg("--store").arg(s);
        }
        if let Some((b, node)) = broker {
            cmd.args(["--broker", &b.url(), "--group", GROUP, "--node", node]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn kensa-fw");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child: Some(child), lines }
    }

    fn kill(&mut self) -> Vec<String> {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        self.lines.lock().unwrap().clone()
    }

    /// Wait for the end of the run: its lines and its JSON summary.
    fn finish(&mut self, secs: u64) -> (Vec<String>, Value) {
        let mut c = self.child.take().unwrap();
        let done = kensa_e2e::eventually(secs, || c.try_wait().unwrap().is_some());
        if !done {
            let _ = c.kill();
        }
        assert!(done, "kensa-fw did not finish in {secs} s");
        assert!(c.wait().unwrap().success(), "kensa-fw failed");
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.lines.lock().unwrap().clone();
        let text = lines.join("\n");
        let json = &text[text.find("\n{").expect("summary JSON")..];
        (lines, serde_json::from_str(json).expect("summary JSON"))
    }
}

impl Drop for SimBox {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A printed part line: its number, verdict and what the line did with it
/// (`part   12  NG  score … decided in 41.0 ms  reject at +800 ms  t=…`).
fn parts(lines: &[String]) -> Vec<(u64, String, String)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("part "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let number = words.next().unwrap().parse().unwrap();
            let verdict = words.next().unwrap().to_string();
            // "decided in {ms:5.1} ms  {action}  t={s}"
            let after = &l[l.find("decided in").unwrap()..];
            let after = &after[after.find(" ms").unwrap() + " ms".len()..];
            let action = after[..after.rfind("  t=").unwrap()].trim().to_string();
            (number, verdict, action)
        })
        .collect()
}

/// One box's DDATA as the independent decoder saw it: record number → metrics (a
/// record delivered twice, at least once, must say the same both times).
fn records(messages: &[Value], node: &str) -> BTreeMap<u64, Value> {
    let mut out = BTreeMap::new();
    for m in messages.iter().filter(|m| m["type"] == "DDATA" && m["node"] == node) {
        let metrics = m["metrics"].clone();
        let n = metrics["Telemetry/Record"].as_u64().expect("every DDATA has its record number");
        if let Some(before) = out.insert(n, metrics.clone()) {
            assert_eq!(before, metrics, "{node}: record {n} delivered twice, differently");
        }
    }
    out
}

/// The parts in `records`, in record order: (part number, verdict).
fn part_records(records: &BTreeMap<u64, Value>) -> Vec<(u64, String)> {
    records
        .values()
        .filter(|r| r["Part/Verdict"].is_string())
        .map(|r| (r["Part/Number"].as_u64().unwrap(), r["Part/Verdict"].as_str().unwrap().to_string()))
        .collect()
}

/// The `bdSeq` of every message of `kind` (`NBIRTH`, `NDEATH`) from `node`.
fn sessions(messages: &[Value], node: &str, kind: &str) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m["type"] == kind && m["node"] == node)
        .map(|m| m["metrics"]["bdSeq"].as_u64().unwrap())
        .collect()
}

fn births(messages: &[Value], node: &str) -> Vec<u64> {
    sessions(messages, node, "NBIRTH")
}

fn deaths(messages: &[Value], node: &str) -> Vec<u64> {
    sessions(messages, node, "NDEATH")
}

/// What `kensa fleet --json` showed while the boxes ran: every box with its model
/// (from births it asked for, since it joined late), parts flowing, no gap, and box b
/// offline after its kill.
fn check_fleet_view(out: &str) {
    let views: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("fleet JSON line")).collect();
    assert!(views.len() >= 5, "kensa fleet printed {} views:\n{out}", views.len());
    let rows = |v: &Value| v["boxes"].as_array().unwrap().clone();
    let row = |v: &Value, node: &str| rows(v).into_iter().find(|r| r["node"] == node);
    let full = views
        .iter()
        .find(|v| {
            let r = rows(v);
            r.len() == 5 && r.iter().all(|b| b["model"] == "patchcore 256x256" && b["threshold"].is_number())
        })
        .unwrap_or_else(|| panic!("no view with all five boxes and their models:\n{out}"));
    assert!(full["connected"] == true);
    let last = views.last().unwrap();
    for node in ["box-a", "box-c", "box-d", "box-e"] {
        let r = row(last, node).unwrap();
        assert!(r["online"] == true && r["parts_per_min"].as_u64().unwrap() > 0, "{node}: {r}");
    }
    for r in rows(last) {
        assert_eq!(r["unexplained_gaps"], 0, "{r}");
    }
    assert!(
        views.iter().any(|v| row(v, "box-b").is_some_and(|r| r["online"] == false)),
        "box-b never showed offline after its kill:\n{out}"
    );
}

/// Five boxes, one broker; the broker is down when one box starts, killed for 30 s
/// mid-run, and one box is SIGKILLed and restarted. Every part each box inspected
/// arrives, numbered without a gap, and the line's decisions and reject timing are
/// those of the same run without telemetry.
#[test]
fn five_boxes_report_every_part_through_broker_outages_and_a_box_kill() {
    if !mosquitto_installed() {
        return skipped_outside_ci("mosquitto (apt-get install mosquitto)");
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sparkplug-venv");
    let Some(python) = sparkplug_python(&venv) else {
        return skipped_outside_ci("python3 -m venv (apt-get install python3-venv)");
    };
    let dir = tempdir();
    let store = |name: &str| dir.path().join(format!("store-{name}"));
    let mut broker = Broker::start(&dir.path().join("broker"));
    let listener = Listener::start(&python, &broker, GROUP, "kensa-e2e-historian");

    // The broker is down when box e starts; it keeps the listener's session.
    broker.stop();
    let with =
        |seed: &'static str| ["--parts", "120", "--rate", "1.5", "--defect-rate", "0.3", "--seed", seed];
    let mut e = SimBox::start(&with("5"), Some(&store("e")), Some((&broker, "box-e")));
    std::thread::sleep(Duration::from_secs(3));
    broker.resume();

    let mut a = SimBox::start(&with("1"), Some(&store("a")), Some((&broker, "box-a")));
    let mut baseline = SimBox::start(&with("1"), None, None);
    let mut b = SimBox::start(&with("2"), Some(&store("b")), Some((&broker, "box-b")));
    // Box c also has its serial link, where a technician sees the telemetry state.
    let serial = SerialLine::new();
    let mut c_args = with("3").to_vec();
    let port = serial.box_port.to_string_lossy().into_owned();
    c_args.extend(["--serial", &port]);
    let mut c = SimBox::start(&c_args, Some(&store("c")), Some((&broker, "box-c")));
    let mut d = SimBox::start(&with("4"), Some(&store("d")), Some((&broker, "box-d")));

    // A fleet view joins after every box was born: it asks them for their births.
    std::thread::sleep(Duration::from_secs(6));
    let before_fleet = listener.messages().len();
    let fleet = kensa()
        .args(["fleet", "--broker", &broker.url(), "--group", GROUP, "--json", "--refresh", "0.5"])
        .args(["--duration", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kensa fleet");
    std::thread::sleep(Duration::from_secs(3));

    // Box b dies while online (the broker sends its will) and comes back on its store.
    let b_first = parts(&b.kill());
    assert!(
        listener.wait_for(10, |m| !deaths(m, "box-b").is_empty()),
        "no NDEATH (last will) for the killed box"
    );
    let mut b = SimBox::start(&with("6"), Some(&store("b")), Some((&broker, "box-b")));

    // The broker vanishes for 30 s.
    std::thread::sleep(Duration::from_secs(4));
    let fleet = fleet.wait_with_output().unwrap();
    assert!(fleet.status.success(), "kensa fleet: {}", String::from_utf8_lossy(&fleet.stderr));
    let status = diag(&serial, &["status"]);
    let endpoint = format!("{} as {GROUP}/box-c", broker.url());
    assert!(status.contains(&format!("telemetry online to {endpoint}")), "{status}");
    // A threshold saved over the link changes what the box announces: a new DBIRTH.
    diag(&serial, &["set", "--threshold", "20.5"]);
    let reborn = |m: &[Value]| {
        m.iter()
            .any(|m| m["type"] == "DBIRTH" && m["node"] == "box-c" && m["metrics"]["Model/Threshold"] == 20.5)
    };
    assert!(listener.wait_for(5, reborn), "no DBIRTH with the threshold set over the link");
    broker.kill();
    std::thread::sleep(Duration::from_secs(20));
    let status = diag(&serial, &["status"]);
    assert!(
        status.contains(&format!("telemetry OFFLINE (records queue on the box) to {endpoint}")),
        "{status}"
    );
    assert!(count(&status, "queued") > 0, "{status}");
    std::thread::sleep(Duration::from_secs(10));
    broker.resume();

    let (a_lines, a_summary) = a.finish(120);
    let (base_lines, base_summary) = baseline.finish(30);
    let finished: Vec<(&str, Vec<String>)> = vec![
        ("box-a", a_lines.clone()),
        ("box-b", b.finish(60).0),
        ("box-c", c.finish(60).0),
        ("box-d", d.finish(60).0),
        ("box-e", e.finish(60).0),
    ];

    check_fleet_view(&String::from_utf8_lossy(&fleet.stdout));

    // Every box's last run ended cleanly: NDEATH after its records.
    let nodes = ["box-a", "box-b", "box-c", "box-d", "box-e"];
    assert!(
        listener.wait_for(20, |m| nodes.iter().all(|n| deaths(m, n).len() > usize::from(*n == "box-b"))),
        "not every box said goodbye: {:?}",
        nodes.map(|n| deaths(&listener.messages(), n))
    );
    let messages = listener.messages();
    // Kept for whoever reads a failure: every message as the decoder printed it.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("telemetry-messages.jsonl");
    let text: String = messages.iter().map(|m| format!("{m}\n")).collect();
    std::fs::write(&kept, text).unwrap();
    eprintln!("decoded messages in {}", kept.display());
    assert!(
        !messages.iter().any(|m| m["type"] == "UNDECODABLE"),
        "pysparkplug could not decode a payload: {:?}",
        messages.iter().find(|m| m["type"] == "UNDECODABLE")
    );

    for (node, lines) in &finished {
        let recs = records(&messages, node);
        // Numbered from 1 without a gap, nothing dropped.
        let numbers: Vec<u64> = recs.keys().copied().collect();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert!(numbers == expected, "{node}: gap in the record numbers: {numbers:?}");
        assert!(recs.values().all(|r| r["Telemetry/Dropped"] == 0), "{node}: records dropped");

        // Every part inspected, with its verdict: for box b its killed run first (less at
        // most the parts decided in the moment before the kill, not yet on disk), then
        // its second run.
        let got = part_records(&recs);
        let printed: Vec<(u64, String)> = parts(lines).into_iter().map(|(n, v, _)| (n, v)).collect();
        if *node == "box-b" {
            let first: Vec<(u64, String)> = b_first.iter().map(|(n, v, _)| (*n, v.clone())).collect();
            let kept = got.len().checked_sub(printed.len()).expect("box-b: fewer records than parts");
            assert!(
                kept + 2 >= first.len() && kept <= first.len(),
                "box-b: {kept} records of the {} parts before the kill",
                first.len()
            );
            assert_eq!(got[..kept], first[..kept], "box-b: the killed run's parts");
            assert_eq!(got[kept..], printed[..], "box-b: the restarted run's parts");
        } else {
            assert_eq!(got, printed, "{node}: the parts reported are not the parts inspected");
        }

        // One session per connection, each with a new bdSeq (a rebirth asked for by
        // the fleet view repeats its session's); every NDEATH names a session that was
        // born, the clean stop's the last one.
        let born = births(&messages, node);
        let mut sessions = born.clone();
        sessions.dedup();
        let distinct: std::collections::BTreeSet<_> = sessions.iter().collect();
        assert_eq!(distinct.len(), sessions.len(), "{node}: bdSeq of an earlier session reused: {born:?}");
        // A box online before the fleet view joined was asked for its births again.
        let online_before = messages[..before_fleet]
            .iter()
            .rev()
            .find(|m| m["node"] == *node)
            .is_some_and(|m| m["type"] != "NDEATH");
        let first_birth_before = births(&messages[..before_fleet], node).last().copied();
        if online_before && let Some(s) = first_birth_before {
            let again = births(&messages[before_fleet..], node);
            assert!(again.contains(&s), "{node}: session {s} not reborn for the fleet view: {born:?}");
        }
        let died = deaths(&messages, node);
        assert!(died.iter().all(|d| born.contains(d)), "{node}: NDEATH {died:?} of no session {born:?}");
        assert_eq!(died.last(), born.last(), "{node}: the last NDEATH is not the last session's");
    }
    // Records made during the outage came late and say so.
    assert!(
        messages.iter().any(|m| m["node"] == "box-a" && m["type"] == "DDATA" && m["historical"] == true),
        "nothing queued through the 30 s outage was flagged historical"
    );

    // The line did not notice: same decisions, same reject timing as without telemetry.
    let (with_t, without): (Vec<_>, Vec<_>) = (parts(&a_lines), parts(&base_lines));
    assert_eq!(with_t.len(), 120);
    let differ: Vec<_> = with_t.iter().zip(&without).filter(|(a, b)| a != b).take(5).collect();
    assert!(
        differ.is_empty() && with_t.len() == without.len(),
        "telemetry changed the line's decisions or timing (with, without): {differ:?}"
    );
    for s in [&a_summary, &base_summary] {
        assert_eq!(s["counters"]["late"], 0, "a decision missed its reject slot: {s}");
        assert_eq!(s["unpushed"], 0, "{s}");
    }
    assert_eq!(a_summary["pulses_fired"], base_summary["pulses_fired"]);
    eprintln!(
        "latency p99 with telemetry {} ms, without {} ms",
        a_summary["latency_p99_ms"], base_summary["latency_p99_ms"]
    );
}
