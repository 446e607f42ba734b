//! The station's answers: what the box reports and changes between two parts. Pure:
//! the station and the identity in, a reply out.

use embedded_hal::digital::OutputPin;
use kensa_shared::verdict::Verdict;
use kensa_shared::wire::frame::MAX_PAYLOAD_LEN;
use kensa_shared::wire::{
    BoxInfo, Counters, DeviceError, PROTOCOL_VERSION, PackageInfo, Reply, StationRequest, Status, Thumbnail,
};

use super::Identity;
use crate::clock::Clock;
use crate::station::{PartResult, Station};

/// A part's thumbnail as grey pixels for the wire.
fn thumbnail(r: &PartResult) -> Option<Thumbnail> {
    let t = image::DynamicImage::ImageRgb8(r.thumbnail.clone()?).to_luma8();
    Some(Thumbnail {
        inspection: r.inspection(),
        width: t.width() as u16,
        height: t.height() as u16,
        pixels: t.into_raw(),
    })
}

/// The station's answer to a request the port thread passed on.
pub fn answer<P: OutputPin, C: Clock>(
    station: &mut Station<P, C>,
    req: &StationRequest,
    identity: &Identity,
    overruns: u64,
) -> Result<Reply, DeviceError> {
    match req {
        StationRequest::Info => {
            let model = identity.model.lock().map(|m| m.clone()).unwrap_or_default();
            Ok(Reply::Info(Box::new(BoxInfo {
                firmware_version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                uptime_s: identity.started.elapsed().as_secs(),
                model: Some(model.name),
                package: PackageInfo {
                    trusted_keys: identity.trusted_keys.min(u16::MAX as usize) as u16,
                    ..model.package
                },
                threshold: station.threshold(),
                source: identity.source.clone(),
                line_stopped: station.line_stopped(),
                threshold_saved: model.threshold_saved,
                reject_delay_ms: station.reject_timing().delay_us as f32 / 1e3,
                reject_pulse_ms: station.reject_timing().width_us as f32 / 1e3,
                reject_saved: model.reject_saved,
                firmware_sha256: identity.firmware_sha256.clone(),
                firmware_state: identity.firmware_state(),
            })))
        }
        StationRequest::Status => Ok(Reply::Status(Status {
            counters: Counters { overruns, ..station.counters() },
            run_permit: station.run_permit(),
            alarms: station.alarms().to_vec(),
            telemetry: None,
        })),
        StationRequest::SetThreshold(t) if t.is_finite() => {
            station.set_threshold(*t);
            Ok(Reply::Done)
        }
        StationRequest::SetThreshold(t) => Err(DeviceError::Failed(format!("threshold {t} is not a number"))),
        StationRequest::SetReject { delay_ms, pulse_ms } => {
            let timing =
                station.reject_timing().with_reject(*delay_ms, *pulse_ms).map_err(DeviceError::Failed)?;
            station.set_reject_timing(timing).map_err(|a| DeviceError::Failed(format!("refused: {a}")))?;
            Ok(Reply::Done)
        }
        StationRequest::TestReject => {
            station.test_reject();
            Ok(Reply::Done)
        }
        StationRequest::ClearLineStop => {
            station.clear_line_stop();
            Ok(Reply::Done)
        }
        StationRequest::LastNg(n) => {
            let part = station
                .recent()
                .rev()
                .filter(|r| r.verdict != Verdict::Ok && r.thumbnail.is_some())
                .nth(*n as usize);
            Ok(Reply::LastNg(part.and_then(thumbnail)))
        }
        StationRequest::Snapshot => Ok(Reply::Snapshot(station.last_seen().and_then(thumbnail))),
        // Leave room in the frame for the message around the lines.
        StationRequest::Logs => Ok(Reply::Logs(identity.logbook.tail(MAX_PAYLOAD_LEN - 256))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;
    use crate::actuator::{Pusher, SimPin};
    use crate::clock::ManualClock;
    use crate::config::Uninspected;
    use crate::link::InForce;
    use crate::schedule::{BeltTiming, RejectScheduler};
    use crate::station::Inspected;

    fn station() -> (Station<SimPin<ManualClock>, ManualClock>, ManualClock, SimPin<ManualClock>) {
        let clock = ManualClock::default();
        let pin = SimPin::new(clock.clone());
        let timing = BeltTiming { delay_us: 500_000, width_us: 20_000, min_gap_us: 5_000, lead_us: 1_000 };
        let pusher = Pusher::new(pin.clone(), false).unwrap();
        (
            Station::new(1.0, pusher, RejectScheduler::new(timing), clock.clone(), Uninspected::Reject),
            clock,
            pin,
        )
    }

    fn identity() -> Identity {
        Identity {
            model: Arc::new(Mutex::new(InForce {
                name: "patchcore 256x256".into(),
                package: kensa_shared::wire::PackageInfo { origin: "slot b".into(), ..Default::default() },
                ..Default::default()
            })),
            source: "synthetic".into(),
            started: Instant::now(),
            logbook: crate::logbook::Logbook::default(),
            firmware_sha256: "00".repeat(32),
            supervised: None,
            trusted_keys: 2,
        }
    }

    #[test]
    fn the_station_answers_status_threshold_test_fire_and_thumbnails() {
        let (mut st, clock, pin) = station();
        let id = identity();
        let thumb = image::RgbImage::from_pixel(64, 48, image::Rgb([90, 90, 90]));
        for (i, score) in [0.5f32, 3.0, 0.2].into_iter().enumerate() {
            let part =
                Inspected { part: i as u64, truth: None, score: Ok(score), thumbnail: Some(thumb.clone()) };
            st.decide(clock.now_us(), part);
        }
        let Ok(Reply::Status(s)) = answer(&mut st, &StationRequest::Status, &id, 4) else { panic!() };
        let c = s.counters;
        assert_eq!((c.parts, c.ok, c.ng, c.rejects, c.overruns), (3, 2, 1, 1, 4));
        assert!(s.run_permit && s.alarms.is_empty());

        assert_eq!(answer(&mut st, &StationRequest::SetThreshold(0.4), &id, 0), Ok(Reply::Done));
        st.decide(clock.now_us(), Inspected { part: 3, truth: None, score: Ok(0.5), thumbnail: None });
        assert_eq!(st.counters().ng, 2, "0.5 is NG at the new threshold");
        assert!(answer(&mut st, &StationRequest::SetThreshold(f32::NAN), &id, 0).is_err());
        let slower = StationRequest::SetReject { delay_ms: 520.0, pulse_ms: 25.0 };
        assert_eq!(answer(&mut st, &slower, &id, 0), Ok(Reply::Done));
        assert_eq!((st.reject_timing().delay_us, st.reject_timing().width_us), (520_000, 25_000));
        let too_soon = StationRequest::SetReject { delay_ms: 0.5, pulse_ms: 25.0 };
        assert!(
            matches!(answer(&mut st, &too_soon, &id, 0), Err(DeviceError::Failed(m)) if m.contains("lead"))
        );
        let back = StationRequest::SetReject { delay_ms: 500.0, pulse_ms: 20.0 };
        assert_eq!(answer(&mut st, &back, &id, 0), Ok(Reply::Done));
        let Ok(Reply::Info(info)) = answer(&mut st, &StationRequest::Info, &id, 0) else { panic!() };
        assert_eq!((info.threshold, info.protocol), (0.4, PROTOCOL_VERSION));
        assert_eq!(info.package.origin, "slot b", "what runs and where it came from");
        assert_eq!(info.package.trusted_keys, 2, "the box's signature policy");

        let Ok(Reply::LastNg(Some(t))) = answer(&mut st, &StationRequest::LastNg(0), &id, 0) else {
            panic!()
        };
        assert_eq!((t.inspection.part, t.width, t.height, t.pixels.len()), (1, 64, 48, 64 * 48));
        assert_eq!(answer(&mut st, &StationRequest::LastNg(1), &id, 0), Ok(Reply::LastNg(None)));
        // The snapshot is the latest frame, an OK part's included.
        let Ok(Reply::Snapshot(Some(snap))) = answer(&mut st, &StationRequest::Snapshot, &id, 0) else {
            panic!()
        };
        assert_eq!((snap.inspection.part, snap.inspection.verdict), (2, Verdict::Ok));
        id.logbook.push("WARN camera lost");
        assert_eq!(
            answer(&mut st, &StationRequest::Logs, &id, 0),
            Ok(Reply::Logs(vec!["WARN camera lost".into()]))
        );

        // Test fire: one stroke 2 ms from now (lead + 1 ms), whatever the belt delay.
        let before = pin.log().lock().unwrap().len();
        assert_eq!(answer(&mut st, &StationRequest::TestReject, &id, 0), Ok(Reply::Done));
        for _ in 0..600 {
            clock.advance(1_000);
            st.tick().unwrap();
        }
        let rises: Vec<u64> =
            pin.log().lock().unwrap()[before..].iter().filter(|e| e.1).map(|e| e.0).collect();
        assert_eq!(rises, [2_000, 500_000], "the test stroke, then the NG parts' shared stroke");
    }
}
