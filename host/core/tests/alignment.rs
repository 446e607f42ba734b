//! Where a backbone feature looks: an anomaly map is only as well placed as this.
//!
//! A small bright dot on flat grey excites the feature cells around it; the centroid of
//! that excitation on the finest (stride-8) grid tells where cell `i` looks. The map
//! drawing corrects for it with `CELL_OFFSET`, so that must match what is measured.

use kensa_core::backbone::Backbone;
use kensa_core::map::CELL_OFFSET;
use kensa_core::train::{DEFAULT_BACKBONE, DEFAULT_FEATURES};

#[test]
fn cell_offset_matches_where_the_backbone_looks() {
    let (h, w) = (256usize, 256usize);
    let names: Vec<String> = DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect();
    let bb = Backbone::load(DEFAULT_BACKBONE, &names, h, w, 1).unwrap();
    let flat = vec![128.0f32; 3 * h * w];
    let base = bb.run(&flat, 1).unwrap().remove(0);
    let mut offsets = Vec::new();
    for (cx, cy) in [(128usize, 128usize), (132, 124), (100, 164), (165, 90)] {
        let mut img = flat.clone();
        for c in 0..3 {
            for y in cy - 1..=cy {
                for x in cx - 1..=cx {
                    img[c * h * w + y * w + x] = 255.0;
                }
            }
        }
        // Finest map: response energy per cell.
        let (m, b) = (&bb.run(&img, 1).unwrap()[0][0], &base[0]);
        let (c, mh, mw) = m.dim();
        let stride = (w / mw) as f32;
        let mut e = vec![0.0f32; mh * mw];
        for ch in 0..c {
            for (i, v) in e.iter_mut().enumerate() {
                *v += (m[[ch, i / mw, i % mw]] - b[[ch, i / mw, i % mw]]).powi(2);
            }
        }
        let s: f32 = e.iter().sum();
        let gx: f32 = e.iter().enumerate().map(|(i, v)| (i % mw) as f32 * v).sum::<f32>() / s;
        let gy: f32 = e.iter().enumerate().map(|(i, v)| (i / mw) as f32 * v).sum::<f32>() / s;
        // The dot's centre is at (cx − 0.5, cy − 0.5); cell g looks at stride·g − offset.
        offsets.push(gx * stride - (cx as f32 - 0.5));
        offsets.push(gy * stride - (cy as f32 - 0.5));
    }
    let mean = offsets.iter().sum::<f32>() / offsets.len() as f32;
    assert!(
        (mean - CELL_OFFSET as f32).abs() <= 1.0,
        "cells look {mean:.2} px before stride·i (per probe {offsets:?}); CELL_OFFSET is {CELL_OFFSET}"
    );
}
