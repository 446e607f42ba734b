//! Write the seed corpus of the frame-decoder fuzz target: one valid frame per message
//! kind, plus frames with noise around them.
//!
//! `cargo run -p kensa-shared --example fuzz_seeds -- fuzz/corpus/frame_decoder`

use kensa_shared::verdict::Verdict;
use kensa_shared::wire::frame::encode;
use kensa_shared::wire::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds <corpus dir>")?);
    std::fs::create_dir_all(&dir)?;
    let inspection = Inspection {
        part: 42,
        captured_us: 1_000_000,
        score: 2.5,
        verdict: Verdict::Ng,
        latency_us: 61_000,
        action: PartAction::Push,
        reason: "score 2.500 >= threshold 1.500".into(),
    };
    let requests: [RequestBody; 8] = [
        SessionRequest::Hello { protocol: PROTOCOL_VERSION }.into(),
        StationRequest::Info.into(),
        StationRequest::Status.into(),
        SessionRequest::Watch(true).into(),
        StationRequest::SetThreshold(1.5).into(),
        StationRequest::TestReject.into(),
        StationRequest::ClearLineStop.into(),
        StationRequest::LastNg(0).into(),
    ];
    let mut seeds: Vec<Vec<u8>> = requests
        .into_iter()
        .enumerate()
        .map(|(i, body)| encode(&Request { id: i as u32, body }))
        .collect::<Result<_, _>>()?;
    let replies = [
        BoxMessage::Reply { id: 1, body: Ok(Reply::Hello { protocol: PROTOCOL_VERSION }) },
        BoxMessage::Reply { id: 2, body: Err(DeviceError::NoSession) },
        BoxMessage::Reply {
            id: 3,
            body: Ok(Reply::Status(Status {
                counters: Counters { parts: 10, ok: 8, ng: 2, ..Default::default() },
                run_permit: false,
                alarms: vec![Alarm::CameraDown("/dev/video0: No such device".into())],
                telemetry: Some(TelemetryState {
                    endpoint: "mqtt://broker:1883 as plant/box1".into(),
                    online: true,
                    queued: 3,
                    dropped: 0,
                }),
            })),
        },
        BoxMessage::Reply {
            id: 4,
            body: Ok(Reply::LastNg(Some(Thumbnail {
                inspection: inspection.clone(),
                width: 8,
                height: 8,
                pixels: vec![128; 64],
            }))),
        },
        BoxMessage::Event(Event::Inspection(inspection)),
    ];
    for m in &replies {
        seeds.push(encode(m)?);
    }
    // Two frames with garbage between them, and a frame cut short.
    let mut noisy = b"\x13\x37noise".to_vec();
    noisy.push(0);
    noisy.extend(&seeds[0]);
    noisy.extend(b"\xff\xfe");
    noisy.extend(&seeds[9]);
    seeds.push(noisy);
    seeds.push(seeds[2][..seeds[2].len() / 2].to_vec());
    // Settings, restart and a firmware upload.
    let more: [(u32, RequestBody); 3] = [
        (20, StationRequest::SetReject { delay_ms: 640.0, pulse_ms: 35.0 }.into()),
        (21, SessionRequest::Restart.into()),
        (
            22,
            FlashRequest::Begin {
                target: FlashTarget::Firmware { signature: Some(vec![0x5a; 96]) },
                size: 4 << 20,
                sha256: "ab".repeat(32),
            }
            .into(),
        ),
    ];
    for (id, body) in more {
        seeds.push(encode(&Request { id, body })?);
    }
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed{i:02}")), s)?;
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    Ok(())
}
