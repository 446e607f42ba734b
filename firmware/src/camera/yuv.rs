//! Camera pixel formats to RGB: packed YUYV (YUV 4:2:2) and Motion-JPEG.
//!
//! YUYV uses the BT.601 limited-range matrix USB cameras send, each chroma pair shared
//! by its two pixels; `firmware/tests/data/camera/` holds frames with ffmpeg's own
//! conversion of the same bytes as the reference the tests compare against.

use image::{DynamicImage, RgbImage};

/// Why a raw frame could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The buffer does not hold a `width`×`height` frame.
    #[error("YUYV frame holds {got} bytes, a {width}x{height} frame needs {want}")]
    Size {
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        want: usize,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// YUYV pairs pixels, so the width must be even.
    #[error("YUYV frames need an even width, not {0}")]
    OddWidth(u32),
    /// The JPEG does not decode.
    #[error("MJPEG frame does not decode: {0}")]
    Jpeg(String),
}

/// Convert packed YUYV (`Y0 U Y1 V` per pixel pair) to RGB.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32) -> Result<RgbImage, ConvertError> {
    if !width.is_multiple_of(2) {
        return Err(ConvertError::OddWidth(width));
    }
    let want = width as usize * height as usize * 2;
    // Drivers may pad the buffer past the frame; less than a frame is a torn capture.
    if data.len() < want {
        return Err(ConvertError::Size { got: data.len(), want, width, height });
    }
    let mut out = Vec::with_capacity(want / 2 * 3);
    for px in data[..want].chunks_exact(4) {
        let (u, v) = (px[1] as i32 - 128, px[3] as i32 - 128);
        for y in [px[0], px[2]] {
            out.extend(bt601(y as i32, u, v));
        }
    }
    Ok(RgbImage::from_raw(width, height, out).expect("sized above"))
}

/// One pixel through the BT.601 limited-range matrix, in 16.16 fixed point.
fn bt601(y: i32, u: i32, v: i32) -> [u8; 3] {
    let c = 76_284 * (y - 16); // 1.164 · 2¹⁶
    let clamp = |x: i32| ((x + 32_768) >> 16).clamp(0, 255) as u8;
    [
        clamp(c + 104_595 * v),             // 1.596
        clamp(c - 25_624 * u - 53_281 * v), // 0.391, 0.813
        clamp(c + 132_252 * u),             // 2.018
    ]
}

/// Decode one whole Motion-JPEG frame; a torn one is an error, not a grey-filled part.
pub fn mjpeg_to_rgb(data: &[u8]) -> Result<DynamicImage, ConvertError> {
    kensa_shared::decode::decode(data)
        .map(|i| DynamicImage::ImageRgb8(i.to_rgb8()))
        .map_err(|e| ConvertError::Jpeg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_levels_map_to_black_white_and_primaries() {
        assert_eq!(bt601(16, 0, 0), [0, 0, 0]);
        assert_eq!(bt601(235, 0, 0), [255, 255, 255]);
        // BT.601 red: Y 81, Cb 90, Cr 240.
        let [r, g, b] = bt601(81, 90 - 128, 240 - 128);
        assert!(r >= 254 && g <= 1 && b <= 1, "{r} {g} {b}");
    }

    #[test]
    fn bad_buffers_are_named_not_panics() {
        assert_eq!(
            yuyv_to_rgb(&[0; 10], 4, 2),
            Err(ConvertError::Size { got: 10, want: 16, width: 4, height: 2 })
        );
        assert_eq!(yuyv_to_rgb(&[0; 16], 3, 2), Err(ConvertError::OddWidth(3)));
        assert!(matches!(mjpeg_to_rgb(b"\xff\xd8garbage"), Err(ConvertError::Jpeg(_))));
        // Padding after the frame is ignored.
        assert_eq!(yuyv_to_rgb(&[128; 20], 4, 2).unwrap().dimensions(), (4, 2));
    }
}
