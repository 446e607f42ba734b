//! The exported package must score exactly like training-time scoring.

use kensa::dataset::{Dataset, Item, Label};
use kensa::export;
use kensa::model::Scorer;
use kensa::train::{Method, TrainOptions, train};
use kensa_shared::package::Package;
use kensa_shared::synth::{Surface, SynthSpec, generate};
use tract_onnx::prelude::*;

#[test]
fn exported_fp32_package_matches_training_time_scores_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec::square(Surface::Wood, 160);
    let mut ds = Dataset::default();
    for i in 0..12u64 {
        let path = dir.path().join(format!("g{i:02}.png"));
        generate(&spec, i, false).image.save(&path).unwrap();
        ds.train.push(Item { path, label: Label::Good, mask: None });
    }
    let opts = TrainOptions { method: Method::PatchCore { coreset: 0.1 }, size: 128, ..Default::default() };
    let model = train(&ds, &[], "synthetic wood", &opts).unwrap();
    let pkg = export::package(&model, vec![]).unwrap();
    let pkg = Package::from_bytes(&pkg.to_bytes()).unwrap();
    assert_eq!(pkg.manifest.threshold, model.threshold.value);

    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(&pkg.onnx))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let scorer = Scorer::new(model).unwrap();
    let pre = pkg.manifest.preprocess;
    let images: Vec<image::DynamicImage> = (0..4u64)
        .map(|i| image::DynamicImage::ImageLuma8(generate(&spec, 100 + i, i % 2 == 0).image))
        .collect();
    let reference = scorer.score(&images, &|_| ()).unwrap();
    for (img, want) in images.iter().zip(&reference) {
        let pixels: Vec<u8> = pre.apply(img).iter().map(|&v| v as u8).collect();
        let input =
            tract_ndarray::Array4::from_shape_vec((1, 3, pre.height as usize, pre.width as usize), pixels)
                .unwrap();
        let out = plan.run(tvec!(Tensor::from(input).into())).unwrap();
        let map = out[0].to_plain_array_view::<f32>().unwrap();
        let score = out[1].to_plain_array_view::<f32>().unwrap()[[0]];
        let peak = want.map.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = map.iter().zip(&want.map).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * peak, "map differs by {worst} (peak {peak})");
        assert!((score - want.score).abs() <= 1e-4 * want.score.abs(), "score {score} vs {}", want.score);
    }
}
