//! The parts the VM stage's conveyor shows (`tests/vm`, `kensa_e2e::hil::part`) are clear
//! cases for the demo model it runs, after the same YUYV round trip the box's camera
//! path makes: a verdict in the VM then tests the drivers and the line, never a score
//! that sits on the threshold.

use image::DynamicImage;
use kensa_e2e::hil::{Expect, part, yuyv};
use kensa_e2e::repo_root;
use kensa_fw::camera::yuv::yuyv_to_rgb;
use kensa_fw::model::Model;
use kensa_fw::station::Inspector;

/// Parts numbered up to this are used by tests/vm/guest.sh.
const PARTS: u64 = 4;

#[test]
fn the_vm_conveyors_parts_are_judged_by_the_demo_model_with_a_clear_margin() {
    let bytes = std::fs::read(repo_root().join("models/demo_brushed_metal.kpkg")).unwrap();
    let mut model = Model::from_bytes(&bytes, "demo", &[]).unwrap();
    let threshold = model.threshold();
    for index in 0..=PARTS {
        for want in [Expect::Pass, Expect::Push] {
            let frame = yuyv_to_rgb(&yuyv(&part(256, index, want)), 256, 256).unwrap();
            let score = model.score(&DynamicImage::ImageRgb8(frame)).unwrap();
            eprintln!("part {index} {want:?}: score {score:.2} (threshold {threshold:.2})");
            match want {
                Expect::Push => assert!(score >= 1.15 * threshold, "part {index} with debris scores {score}"),
                _ => assert!(score <= 0.955 * threshold, "good part {index} scores {score}"),
            }
        }
    }
}
