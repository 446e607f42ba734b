//! The same frames get the same decisions on every build of the box.
//!
//! Scores the first parts of the simulated conveyor with the shipped demo model and
//! compares them with `data/sim_decisions.txt`, recorded on x86-64. CI runs this test
//! natively and under qemu-aarch64, so both architectures are held to one record.
//! `KENSA_BLESS=1 cargo test -p kensa-fw --test sim_decisions` rewrites the record.

use kensa_fw::camera::{FrameSource, SyntheticConveyor};
use kensa_fw::model::Model;
use kensa_fw::station::{Inspector, inspect};
use kensa_shared::synth::{Surface, SynthSpec};
use kensa_shared::verdict::{Verdict, decide};

const MODEL: &[u8] = include_bytes!("../../models/demo_brushed_metal.kpkg");
const RECORD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sim_decisions.txt");

#[test]
fn decisions_match_the_recorded_ones() {
    let mut model = Model::from_bytes(MODEL, "demo model", &[]).unwrap();
    let mut source = SyntheticConveyor::new(SynthSpec::square(Surface::BrushedMetal, 256), 5.0, 0.5, 3);
    let mut lines = Vec::new();
    for n in 0..6 {
        let part = inspect(&mut model, n, source.next_frame());
        let score = part.score.clone().unwrap();
        let verdict = decide(score, model.threshold());
        lines.push((part.part, part.truth.unwrap(), verdict, score));
    }
    let text: String = lines
        .iter()
        .map(|(seq, truth, v, s)| format!("{seq} {} {v:?} {s:.4}\n", if *truth { "debris" } else { "good" }))
        .collect();
    if std::env::var_os("KENSA_BLESS").is_some() {
        std::fs::write(RECORD, &text).unwrap();
        return;
    }
    let record = std::fs::read_to_string(RECORD).expect("recorded decisions");
    let mut n = 0;
    for ((seq, truth, verdict, score), line) in lines.iter().zip(record.lines()) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0].parse::<u64>().unwrap(), *seq);
        assert_eq!(f[1] == "debris", *truth, "part {seq}: ground truth differs from the record");
        let want: f32 = f[3].parse().unwrap();
        assert!((score - want).abs() <= 1e-3 * want.abs(), "part {seq}: score {score} vs recorded {want}");
        // Verdicts must agree unless the score sits within the tolerance of the threshold.
        if (score - model.threshold()).abs() > 1e-3 * want.abs() {
            assert_eq!(format!("{verdict:?}"), f[2], "part {seq}: verdict differs from the record");
        }
        assert_ne!(*verdict, Verdict::Uninspected);
        n += 1;
    }
    assert_eq!(n, 6, "record holds {n} parts");
    // Every defective part is caught (otherwise this test would prove little).
    assert!(lines.iter().filter(|l| l.1).all(|l| l.2 == Verdict::Ng), "{text}");
}
