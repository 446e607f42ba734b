//! Image decoding, all or nothing: the one rule both sides apply to image bytes.
//!
//! A JPEG cut short decodes, with the lenient settings most viewers use, into an image
//! whose missing rest is flat grey, and a flat grey rest scores as a perfect good part.
//! Here any premature end, damaged entropy-coded data or misplaced marker is an error,
//! so the host names the file and the box counts the part as uninspected.

use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// Why image bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a format this build reads.
    #[error("not a supported image format (PNG, JPEG, BMP or TIFF)")]
    Format,
    /// The bytes end or break before the image does.
    #[error("damaged or truncated {format}: {reason}")]
    Damaged {
        /// Format name.
        format: &'static str,
        /// What the decoder found.
        reason: String,
    },
    /// Zero pixels.
    #[error("empty image (0 px)")]
    Empty,
}

/// Decode a whole image or refuse it.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, DecodeError> {
    let format = image::guess_format(bytes).map_err(|_| DecodeError::Format)?;
    let img = match format {
        ImageFormat::Jpeg => jpeg(bytes)?,
        ImageFormat::Png | ImageFormat::Bmp | ImageFormat::Tiff => {
            image::load_from_memory_with_format(bytes, format)
                .map_err(|e| DecodeError::Damaged { format: format_name(format), reason: e.to_string() })?
        }
        _ => return Err(DecodeError::Format),
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(img)
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

/// JPEG in strict mode: grey stays grey, everything else becomes RGB.
fn jpeg(bytes: &[u8]) -> Result<DynamicImage, DecodeError> {
    let damaged =
        |e: zune_jpeg::errors::DecodeErrors| DecodeError::Damaged { format: "JPEG", reason: e.to_string() };
    let options =
        DecoderOptions::default().set_strict_mode(true).set_max_width(1 << 16).set_max_height(1 << 16);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers().map_err(damaged)?;
    let grey = matches!(d.input_colorspace(), Some(ColorSpace::Luma | ColorSpace::LumaA));
    let out = if grey { ColorSpace::Luma } else { ColorSpace::RGB };
    d.set_options(d.options().jpeg_set_out_colorspace(out));
    let pixels = d.decode().map_err(damaged)?;
    let (w, h) = d.dimensions().ok_or(DecodeError::Empty)?;
    let (w, h) = (w as u32, h as u32);
    let short = || DecodeError::Damaged { format: "JPEG", reason: "fewer pixels than its size".into() };
    Ok(if grey {
        DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, pixels).ok_or_else(short)?)
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels).ok_or_else(short)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn textured(w: u32, h: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 7 + y * 13) % 251) as u8]))
    }

    fn encode(img: DynamicImage, f: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, f).unwrap();
        out.into_inner()
    }

    #[test]
    fn whole_images_decode_to_their_pixels() {
        let g = textured(96, 64);
        let png = encode(DynamicImage::ImageLuma8(g.clone()), ImageFormat::Png);
        assert_eq!(decode(&png).unwrap().to_luma8(), g);
        let jpg = encode(DynamicImage::ImageLuma8(g.clone()), ImageFormat::Jpeg);
        let back = decode(&jpg).unwrap();
        assert!(matches!(back, DynamicImage::ImageLuma8(_)), "grey JPEG stays grey");
        assert_eq!(back.width(), 96);
        assert_eq!(
            back.to_luma8(),
            image::load_from_memory(&jpg).unwrap().to_luma8(),
            "same pixels as lenient"
        );
        let rgb = encode(DynamicImage::ImageRgb8(DynamicImage::ImageLuma8(g).to_rgb8()), ImageFormat::Jpeg);
        assert!(matches!(decode(&rgb).unwrap(), DynamicImage::ImageRgb8(_)));
    }

    #[test]
    fn a_jpeg_cut_short_is_refused_not_filled_with_grey() {
        let jpg = encode(DynamicImage::ImageLuma8(textured(256, 256)), ImageFormat::Jpeg);
        // What lenient decoding makes of it: the rest is flat grey.
        let cut = &jpg[..jpg.len() / 3];
        let lenient = image::load_from_memory(cut).expect("lenient decoding fills in").to_luma8();
        assert_eq!(lenient.get_pixel(128, 250).0[0], 128, "lenient decoding pads with mid-grey");
        let err = decode(cut).unwrap_err();
        assert!(matches!(err, DecodeError::Damaged { format: "JPEG", .. }), "{err}");
    }

    #[test]
    fn a_png_cut_short_or_garbage_is_refused() {
        let png = encode(DynamicImage::ImageLuma8(textured(128, 128)), ImageFormat::Png);
        for cut in [png.len() / 2, png.len() - 20, 40] {
            assert!(decode(&png[..cut]).is_err(), "PNG cut at {cut} of {}", png.len());
        }
        assert!(matches!(decode(b"not an image at all"), Err(DecodeError::Format)));
        assert!(matches!(decode(&[]), Err(DecodeError::Format)));
    }

    #[test]
    fn damaged_entropy_data_is_refused() {
        let mut jpg = encode(DynamicImage::ImageLuma8(textured(128, 128)), ImageFormat::Jpeg);
        // A marker in the middle of the scan data, as a torn transfer leaves it.
        let mid = jpg.len() / 2;
        jpg[mid] = 0xFF;
        jpg[mid + 1] = 0xD8;
        assert!(decode(&jpg).is_err());
    }
}
