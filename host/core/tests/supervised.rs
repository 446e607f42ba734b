//! The supervised head on generated parts: its class-activation map points at the
//! defect, and its training is reproducible.

mod common;

use common::{spec, trained_supervised};
use kensa_core::heads::Head;
use kensa_core::score::Scorer;
use kensa_shared::synth::generate;

#[test]
fn the_class_activation_map_peaks_on_the_defect() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_supervised(dir.path(), false);
    assert!(matches!(model.head, Head::Supervised(_)));
    assert!(!model.training.curves.is_empty());
    let scorer = Scorer::new(model).unwrap();
    let side = scorer.model.preprocess.width;
    let parts: Vec<_> = (200..206u64).map(|seed| generate(&spec(), seed, true)).collect();
    let images: Vec<_> = parts.iter().map(|p| image::DynamicImage::ImageLuma8(p.image.clone())).collect();
    let scored = scorer.score(&images, &|_| ()).unwrap();
    let mut on_defect = 0;
    for (part, s) in parts.iter().zip(&scored) {
        // The peak of the map, in source pixels; the defect's box, grown by one patch
        // cell (8 model px) for the grid and the blur.
        let peak = (0..s.map.len()).max_by(|&a, &b| s.map[a].total_cmp(&s.map[b])).unwrap();
        let scale = spec().width as f32 / side as f32;
        let (px, py) = ((peak % s.width) as f32 * scale, (peak / s.width) as f32 * scale);
        let margin = 8.0 * scale;
        let hit = part.debris.iter().any(|d| {
            let (x0, y0, x1, y1) = d.bbox(spec().width, spec().height);
            (x0 as f32 - margin..=x1 as f32 + margin).contains(&px)
                && (y0 as f32 - margin..=y1 as f32 + margin).contains(&py)
        });
        on_defect += usize::from(hit);
    }
    assert!(on_defect >= 5, "the map peaks on the defect in only {on_defect} of 6 parts");
}

#[test]
fn training_is_reproducible() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ma, mb) = (trained_supervised(a.path(), false), trained_supervised(b.path(), false));
    let (Head::Supervised(ca), Head::Supervised(cb)) = (&ma.head, &mb.head) else { panic!("not supervised") };
    assert_eq!(ca, cb);
    assert_eq!(ma.threshold, mb.threshold);
}
