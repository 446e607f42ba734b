//! The pixel pipeline: camera or file image → the tensor the model sees.
//!
//! Host and box both call [`Preprocess::apply`], so training, evaluation and the line see
//! identical inputs. The policy travels inside the model package; the box never guesses.
//!
//! Output layout: `[3, height, width]` f32, RGB, values 0–255 (scaling to the backbone's
//! range is part of the ONNX graph, so it cannot drift from the weights). Grey images are
//! replicated to three channels.

use image::{DynamicImage, GrayImage, RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

/// How an image of arbitrary size becomes `width`×`height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resize {
    /// Scale each axis independently (aspect ratio not kept). Suits parts that fill the frame.
    Stretch,
}

/// Colour handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Colour {
    /// Convert to luma, then replicate to RGB: colour casts between cameras cannot matter.
    Gray,
    /// Keep RGB.
    Rgb,
}

/// Complete preprocessing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Model input width (px).
    pub width: u32,
    /// Model input height (px).
    pub height: u32,
    /// Resize policy.
    pub resize: Resize,
    /// Colour policy.
    pub colour: Colour,
}

impl Preprocess {
    /// Number of f32 values [`Preprocess::apply`] writes.
    pub fn len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// True when the output is empty (zero-sized input spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resize and convert `img` into `out` (`[3, h, w]`, 0–255). `out` must hold [`Self::len`].
    pub fn apply_into(&self, img: &DynamicImage, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "preprocess output buffer has the wrong size");
        let plane = (self.width * self.height) as usize;
        match self.colour {
            Colour::Gray => {
                let g = self.resized_gray(img);
                for (i, p) in g.pixels().enumerate() {
                    let v = p[0] as f32;
                    out[i] = v;
                    out[plane + i] = v;
                    out[2 * plane + i] = v;
                }
            }
            Colour::Rgb => {
                let rgb = self.resized_rgb(img);
                for (i, p) in rgb.pixels().enumerate() {
                    for c in 0..3 {
                        out[c * plane + i] = p[c] as f32;
                    }
                }
            }
        }
    }

    /// [`Self::apply_into`] into a new vector.
    pub fn apply(&self, img: &DynamicImage) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        self.apply_into(img, &mut out);
        out
    }

    /// The image as the model sees it, as 8-bit grey (for overlays and thumbnails).
    pub fn resized_gray(&self, img: &DynamicImage) -> GrayImage {
        let g = img.to_luma8();
        if g.dimensions() == (self.width, self.height) {
            return g;
        }
        match self.resize {
            Resize::Stretch => image::imageops::resize(&g, self.width, self.height, FilterType::Triangle),
        }
    }

    /// The image as the model sees it, in colour.
    pub fn resized_rgb(&self, img: &DynamicImage) -> RgbImage {
        let rgb = match self.colour {
            Colour::Gray => DynamicImage::ImageLuma8(img.to_luma8()).to_rgb8(),
            Colour::Rgb => img.to_rgb8(),
        };
        if rgb.dimensions() == (self.width, self.height) {
            return rgb;
        }
        match self.resize {
            Resize::Stretch => image::imageops::resize(&rgb, self.width, self.height, FilterType::Triangle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    #[test]
    fn gray_is_replicated_to_three_planes() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(4, 2, |x, y| Luma([(10 * x + y) as u8])));
        let p = Preprocess { width: 4, height: 2, resize: Resize::Stretch, colour: Colour::Gray };
        let t = p.apply(&img);
        assert_eq!(t.len(), 24);
        assert_eq!(&t[0..8], &t[8..16]);
        assert_eq!(&t[0..8], &t[16..24]);
        assert_eq!(t[5], 11.0); // x=1, y=1
    }

    #[test]
    fn rgb_is_planar_and_resized() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 6, Rgb([200, 100, 50])));
        let p = Preprocess { width: 4, height: 3, resize: Resize::Stretch, colour: Colour::Rgb };
        let t = p.apply(&img);
        assert!(t[..12].iter().all(|&v| v == 200.0));
        assert!(t[12..24].iter().all(|&v| v == 100.0));
        assert!(t[24..].iter().all(|&v| v == 50.0));
    }
}
