//! A real MQTT broker (Debian's mosquitto) on a free loopback port, and an independent
//! Sparkplug B subscriber (`tests/telemetry/sparkplug_listen.py`, PyPI's pysparkplug)
//! that prints what it decodes, for the fleet telemetry tests.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::{Running, eventually, repo_root};

/// Whether mosquitto is installed (`.ci/deps` installs it).
pub fn mosquitto_installed() -> bool {
    Command::new("mosquitto").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A mosquitto broker on `127.0.0.1:<port>` that keeps its state (sessions, queued
/// messages) in its folder across a stop or a kill, as a plant's broker does.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn signal(child: &Child, sig: &str) {
    let sent = Command::new("kill").args([sig, &child.id().to_string()]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {sig} mosquitto");
}

impl Broker {
    /// Start a broker keeping its files in `dir`.
    pub fn start(dir: &Path) -> Self {
        let mut b = Self { port: free_port(), dir: dir.to_path_buf(), child: None };
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        // `user root`: started by root, mosquitto would otherwise switch to its own user,
        // which cannot write the test's folder (started by anyone else, it stays who it is).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
                 persistence_location {dir}/\nautosave_interval 1\nmax_queued_messages 0\n\
                 log_dest file {dir}/mosquitto.log\n",
                port = b.port,
                dir = dir.display()
            ),
        )
        .unwrap();
        b.resume();
        b
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Start it again (same port, same state).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let up = eventually(10, || TcpStream::connect(("127.0.0.1", self.port)).is_ok());
        assert!(up, "mosquitto did not listen on {}: {}", self.port, self.log());
    }

    /// SIGKILL: the broker vanishes without a word.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "-KILL");
            let _ = c.wait();
        }
    }

    /// SIGTERM: a clean shutdown that saves the broker's state.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "-TERM");
            let _ = c.wait();
        }
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Python with pysparkplug, in a virtualenv at `venv` made on first use from the
/// pins in `tests/telemetry/requirements.txt`; `None` without python3-venv.
pub fn sparkplug_python(venv: &Path) -> Option<PathBuf> {
    let has_venv =
        Command::new("python3").args(["-m", "venv", "--help"]).output().is_ok_and(|o| o.status.success());
    if !has_venv {
        return None;
    }
    let root = repo_root();
    let out = Command::new("bash")
        .arg(root.join("tools/pyenv.sh"))
        .arg(root.join("tests/telemetry/requirements.txt"))
        .arg(venv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "could not install pysparkplug from PyPI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
}

/// The independent subscriber: every message it decoded, as JSON, in arrival order.
#[derive(Debug)]
pub struct Listener {
    _child: Running,
    messages: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Listener {
    /// Subscribe to `group` on `broker` with a persistent session named `client_id`;
    /// returns once subscribed.
    pub fn start(python: &Path, broker: &Broker, group: &str, client_id: &str) -> Self {
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/telemetry/sparkplug_listen.py"))
            .args(["127.0.0.1", &broker.port().to_string(), group, client_id])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the Sparkplug listener");
        let stdout = child.stdout.take().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str(&line) {
                    Ok(v) => sink.lock().unwrap().push(v),
                    Err(e) => panic!("listener printed {line:?}: {e}"),
                }
            }
        });
        let l = Self { _child: Running(child), messages };
        assert!(
            l.wait_for(15, |m| m.iter().any(|v| v["type"] == "LISTENING")),
            "the listener did not subscribe"
        );
        l
    }

    /// What it decoded so far.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.messages.lock().unwrap().clone()
    }

    /// Wait at most `secs` for `cond` over the messages; whether it held.
    pub fn wait_for(&self, secs: u64, mut cond: impl FnMut(&[serde_json::Value]) -> bool) -> bool {
        eventually(secs, || cond(&self.messages.lock().unwrap()))
    }
}
