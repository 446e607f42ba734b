//! Camera pixel conversions against ffmpeg's conversion of the same raw frames
//! (`tests/data/camera/README.md` says how the references were made).

use kensa_fw::camera::yuv::{mjpeg_to_rgb, yuyv_to_rgb};

const W: u32 = 96;
const H: u32 = 64;

fn data(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/camera").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (largest, mean) absolute difference per channel value.
fn difference(got: &[u8], want: &[u8]) -> (u8, f64) {
    assert_eq!(got.len(), want.len(), "sizes differ");
    let d: Vec<u8> = got.iter().zip(want).map(|(a, b)| a.abs_diff(*b)).collect();
    (*d.iter().max().unwrap(), d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64)
}

#[test]
fn yuyv_matches_ffmpeg() {
    let rgb = yuyv_to_rgb(&data("testsrc2_96x64.yuyv"), W, H).unwrap();
    let (max, mean) = difference(rgb.as_raw(), &data("testsrc2_96x64.yuyv.ffmpeg.rgb"));
    // ffmpeg's table-driven converter rounds about one level lower on average; the
    // matrix and the chroma siting agree (interpolated chroma would differ by up to 226).
    assert!(max <= 3 && mean <= 1.0, "YUYV differs from ffmpeg by up to {max} (mean {mean:.2})");
}

#[test]
fn mjpeg_matches_ffmpeg() {
    let img = mjpeg_to_rgb(&data("testsrc2_96x64.mjpg")).unwrap();
    assert_eq!((img.width(), img.height()), (W, H));
    let (max, mean) = difference(img.to_rgb8().as_raw(), &data("testsrc2_96x64.mjpg.ffmpeg.rgb"));
    // Against ffmpeg with interpolated chroma, as the JPEG decoder upsamples; IDCT
    // rounding accounts for the rest.
    assert!(max <= 4 && mean <= 0.5, "MJPEG differs from ffmpeg by up to {max} (mean {mean:.2})");
}
