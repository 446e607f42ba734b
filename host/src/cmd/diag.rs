//! `kensa diag`: what a box sees and does, over its serial line.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use kensa_shared::wire::endpoint::{
    ClearLineStop, Info, LastNg, Logs, Restart, SetReject, SetThreshold, Snapshot, Status, TestReject, Watch,
};
use kensa_shared::wire::{Event, FirmwareState, Inspection, PartAction};

use crate::cli::DiagAction as Action;
use crate::link::Link;

/// One part as the technician reads it: verdict, score, time, what was done and why.
fn line(i: &Inspection) -> String {
    let verdict = i.verdict;
    let score = if i.score.is_nan() { "      -".into() } else { format!("{:7.3}", i.score) };
    let action = match i.action {
        PartAction::Pass => "pass",
        PartAction::Push => "pushed",
        PartAction::StopLine => "LINE STOPPED",
    };
    let reason = if i.reason.is_empty() { String::new() } else { format!("  ({})", i.reason) };
    format!(
        "part {:5}  {verdict:<11} score {score}  decided in {:6.1} ms  {action}{reason}",
        i.part,
        i.latency_us as f64 / 1e3
    )
}

fn save_thumbnail(t: &kensa_shared::wire::Thumbnail, path: &Path) -> Result<()> {
    let img = image::GrayImage::from_raw(t.width as u32, t.height as u32, t.pixels.clone())
        .context("thumbnail size does not match its pixels")?;
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

/// Run `action` against the box on `port`.
pub fn run(port: &Path, baud: u32, action: &Action) -> Result<()> {
    let mut link = Link::open(port, baud)?;
    match action {
        Action::Info => info(&mut link)?,
        Action::Status => status(&mut link)?,
        Action::Watch { count } => watch(&mut link, *count)?,
        Action::Set { threshold, delay_ms, pulse_ms } => set(&mut link, *threshold, *delay_ms, *pulse_ms)?,
        Action::Restart => {
            link.call(Restart)?;
            say!("the box is restarting its pipeline");
        }
        Action::TestReject => {
            link.call(TestReject)?;
            say!("reject output fired");
        }
        Action::ClearLineStop => {
            link.call(ClearLineStop)?;
            say!("line stop cleared");
        }
        Action::Logs => logs(&mut link)?,
        Action::Snapshot { out } => {
            let t = link.call(Snapshot)?.context("the box has not captured a frame yet")?;
            save_thumbnail(&t, out)?;
            say!("{}  -> {}", line(&t.inspection), out.display());
        }
        Action::LastNg { out, max } => last_ng(&mut link, out, *max)?,
    }
    if link.bad_frames > 0 {
        tracing::warn!("{} corrupt frames dropped on {}", link.bad_frames, port.display());
    }
    Ok(())
}

fn info(link: &mut Link) -> Result<()> {
    let i = link.call(Info)?;
    let state = match i.firmware_state {
        FirmwareState::Unsupervised => "not supervised: firmware cannot be flashed",
        FirmwareState::Committed => "supervised",
        FirmwareState::Trial => "ON TRIAL: rolled back unless it reports healthy",
    };
    say!("firmware  kensa-fw {} (protocol {}), sha256 {}", i.firmware_version, i.protocol, i.firmware_sha256);
    say!("          {state}");
    say!("model     {}", i.model.as_deref().unwrap_or("none"));
    let p = &i.package;
    say!(
        "          {} from {}, exported {} (unix), graph sha256 {}",
        p.precision,
        p.origin,
        p.created_unix,
        p.sha256
    );
    let signer = p.signer.as_deref().map_or("unsigned".to_string(), |k| format!("signed by {k}"));
    let policy = match p.trusted_keys {
        0 => "the box accepts any intact package".to_string(),
        n => format!("the box accepts only packages signed by one of {n} trusted keys"),
    };
    say!("          {signer}; {policy}");
    say!("source    {}", i.source);
    let saved = |s: bool| if s { " (saved over the link)" } else { "" };
    say!("threshold {:.4}{}", i.threshold, saved(i.threshold_saved));
    say!(
        "reject    +{:.1} ms, {:.1} ms pulse{}",
        i.reject_delay_ms,
        i.reject_pulse_ms,
        saved(i.reject_saved)
    );
    say!("uptime    {} s", i.uptime_s);
    say!("line      {}", if i.line_stopped { "STOPPED (see `kensa diag status`)" } else { "running" });
    Ok(())
}

fn status(link: &mut Link) -> Result<()> {
    let s = link.call(Status)?;
    let c = s.counters;
    say!(
        "parts {}  OK {}  NG {}  uninspected {} (overruns {})  rejects {} (merged {})  late {}  line stops {}",
        c.parts,
        c.ok,
        c.ng,
        c.uninspected,
        c.overruns,
        c.rejects,
        c.merged,
        c.late,
        c.line_stops
    );
    say!("run permit {}", if s.run_permit { "ON: the line may run" } else { "OFF: the line is stopped" });
    for a in &s.alarms {
        say!("ALARM     {a}");
    }
    if s.alarms.iter().any(|a| matches!(a, kensa_shared::wire::Alarm::LineStopped(_))) {
        say!("          check the line, then `kensa diag <port> clear-line-stop`");
    }
    match &s.telemetry {
        None => say!("telemetry off"),
        Some(t) => say!(
            "telemetry {} to {}  queued {}  dropped {}",
            if t.online { "online" } else { "OFFLINE (records queue on the box)" },
            t.endpoint,
            t.queued,
            t.dropped
        ),
    }
    Ok(())
}

fn watch(link: &mut Link, count: Option<u64>) -> Result<()> {
    link.call(Watch { on: true })?;
    let mut seen = 0u64;
    while count.is_none_or(|n| seen < n) {
        if let Some(Event::Inspection(i)) = link.next_event(Duration::from_secs(5))? {
            say!("{}", line(&i));
            seen += 1;
        }
    }
    link.call(Watch { on: false })?;
    Ok(())
}

fn set(link: &mut Link, threshold: Option<f32>, delay_ms: Option<f32>, pulse_ms: Option<f32>) -> Result<()> {
    if let Some(t) = threshold {
        link.call(SetThreshold { value: t })?;
    }
    let reject = delay_ms.is_some() || pulse_ms.is_some();
    if reject {
        let now = link.call(Info)?;
        let (delay_ms, pulse_ms) =
            (delay_ms.unwrap_or(now.reject_delay_ms), pulse_ms.unwrap_or(now.reject_pulse_ms));
        link.call(SetReject { delay_ms, pulse_ms })?;
    }
    let i = link.call(Info)?;
    if threshold.is_some() {
        say!("threshold {:.4}", i.threshold);
    }
    if reject {
        say!("reject    +{:.1} ms, {:.1} ms pulse", i.reject_delay_ms, i.reject_pulse_ms);
    }
    if (threshold.is_none() || i.threshold_saved) && (!reject || i.reject_saved) {
        say!("saved: kept across restarts (a threshold until another model is flashed)");
    } else {
        say!("not saved: the box has no store, this lasts until it restarts");
    }
    Ok(())
}

fn logs(link: &mut Link) -> Result<()> {
    let lines = link.call(Logs)?;
    for l in &lines {
        say!("{l}");
    }
    if lines.is_empty() {
        say!("(no log lines at the box's log level)");
    }
    Ok(())
}

fn last_ng(link: &mut Link, out: &Path, max: u8) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut saved = 0;
    for n in 0..max {
        let Some(t) = link.call(LastNg { n })? else { break };
        let path = out.join(format!("part{:06}.png", t.inspection.part));
        save_thumbnail(&t, &path)?;
        say!("{}  -> {}", line(&t.inspection), path.display());
        saved += 1;
    }
    if saved == 0 {
        say!("no rejected part with a thumbnail yet");
    }
    Ok(())
}
