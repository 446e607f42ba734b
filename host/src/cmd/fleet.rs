//! `kensa fleet`: subscribe to the boxes' Sparkplug B topics on the plant's broker and
//! show one line per box, refreshed in place (or as JSON lines for scripts).

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use kensa_shared::telemetry::{BrokerUrl, Payload, Topic, records};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS, Transport};

use crate::cli::FleetArgs;
use crate::fleet::{Board, Request, table};

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Watch the broker until `--duration` ends (or forever).
pub fn run(a: &FleetArgs) -> Result<()> {
    let url: BrokerUrl = a.broker.parse()?;
    let (client, mut connection) = Client::new(options(a, &url)?, 256);
    let filter = match &a.group {
        Some(g) => {
            kensa_shared::telemetry::topic::check_id("--group", g)?;
            format!("spBv1.0/{g}/#")
        }
        None => "spBv1.0/#".to_string(),
    };
    let started = Instant::now();
    let until = a.duration.map(|s| started + Duration::from_secs_f64(s));
    let refresh = Duration::from_secs_f64(a.refresh.max(0.1));
    let live = std::io::stdout().is_terminal() && !a.json;
    let mut board = Board::default();
    let mut next_show = started + refresh;
    let mut connected = false;
    let mut problem: Option<String> = None;
    loop {
        let now = Instant::now();
        if now >= next_show || until.is_some_and(|u| now >= u) {
            show(&mut board, &url, a.json, live, connected, problem.as_deref())?;
            next_show = now + refresh;
            if until.is_some_and(|u| now >= u) {
                return Ok(());
            }
        }
        let wait = next_show.saturating_duration_since(now).min(Duration::from_millis(200));
        match connection.recv_timeout(wait) {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                connected = true;
                problem = None;
                // A clean session: subscribe on every connection.
                client.try_subscribe(&filter, QoS::AtLeastOnce)?;
            }
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                let Some(topic) = Topic::parse(&p.topic) else { continue };
                let Ok(payload) = Payload::decode(&p.payload) else {
                    tracing::warn!("{}: payload is not Sparkplug B, ignored", p.topic);
                    continue;
                };
                let Some(message) = records::decode(topic.message, &payload) else { continue };
                if let Some(Request::Rebirth(group, node)) =
                    board.apply(&topic.group, &topic.node, message, unix_ms())
                {
                    let ncmd = Topic::node(&group, kensa_shared::telemetry::MessageType::NCmd, &node);
                    client.try_publish(
                        ncmd.to_string(),
                        QoS::AtMostOnce,
                        false,
                        records::rebirth_request(unix_ms()).encode(),
                    )?;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                connected = false;
                problem = Some(e.to_string());
                // rumqttc reconnects on the next poll; not faster than once a second.
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Err(rumqttc::RecvTimeoutError::Disconnected) => anyhow::bail!("MQTT client closed"),
        }
    }
}

fn options(a: &FleetArgs, url: &BrokerUrl) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(format!("kensa-fleet-{}", std::process::id()), &url.host, url.port);
    o.set_keep_alive(Duration::from_secs(10)).set_clean_session(true).set_max_packet_size(1 << 20, 1 << 20);
    if let Some(user) = &a.username {
        let password = match &a.password_file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("--password-file {}", p.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        };
        o.set_credentials(user, password);
    }
    if url.tls {
        o.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls(a)?))));
    }
    Ok(o)
}

/// TLS with `--ca-file` or the system's roots (ring: pure Rust, no CMake).
fn tls(a: &FleetArgs) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match &a.ca_file {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
                roots.add(cert.with_context(|| format!("--ca-file {}", path.display()))?)?;
            }
            anyhow::ensure!(!roots.is_empty(), "--ca-file {}: no PEM certificate in it", path.display());
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn show(
    board: &mut Board,
    url: &BrokerUrl,
    json: bool,
    live: bool,
    connected: bool,
    problem: Option<&str>,
) -> Result<()> {
    let now = unix_ms();
    let rows = board.rows(now);
    if json {
        let line = serde_json::json!({
            "broker": url.to_string(),
            "connected": connected,
            "unix_ms": now,
            "boxes": rows,
        });
        say!("{line}");
        return Ok(());
    }
    let online = rows.iter().filter(|r| r.online).count();
    let state = match (connected, problem) {
        (true, _) => "connected".to_string(),
        (false, Some(p)) => format!("NOT CONNECTED: {p}"),
        (false, None) => "connecting".to_string(),
    };
    if live {
        // Home and clear: the table refreshes in place.
        print!("\x1b[H\x1b[2J");
    }
    say!("{url} ({state}): {} boxes, {online} online", rows.len());
    say!("{}", table(&rows));
    Ok(())
}
