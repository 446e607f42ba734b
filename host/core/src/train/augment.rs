//! Label-preserving augmentation: new views of a part that still show every defect it has.
//!
//! Geometry is flips, quarter turns (half turns only for non-square images, which the
//! model stretches to a square anyway), a small rotation and a zoom *out*: the rotated
//! image is always scaled to fit inside the frame, so no pixel of the part (and no
//! defect) is ever cut off. The border this uncovers repeats the edge pixels. Photometry
//! is brightness and contrast. Every choice comes from the caller's seeded generator.

use image::{DynamicImage, GrayImage, ImageBuffer, Pixel};
use rand::Rng;

/// Ranges the random views are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct Augment {
    /// Largest rotation either way (degrees) on top of quarter turns.
    pub max_rotation_deg: f32,
    /// Extra zoom-out range (1 = none) after fitting the rotated image in the frame.
    pub zoom_out: (f32, f32),
    /// Largest brightness shift (grey levels).
    pub brightness: f32,
    /// Largest contrast change (0.2 = ×0.8 … ×1.2).
    pub contrast: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self { max_rotation_deg: 10.0, zoom_out: (0.9, 1.0), brightness: 20.0, contrast: 0.2 }
    }
}

/// One drawn view: apply it to an image and, identically, to its mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Mirror left–right.
    pub flip_h: bool,
    /// Mirror top–bottom.
    pub flip_v: bool,
    /// Clockwise quarter turns (0–3).
    pub quarter_turns: u8,
    /// Small rotation (radians).
    pub angle: f32,
    /// Zoom factor (≤ 1: the whole rotated image fits the frame).
    pub scale: f32,
    /// Added to every grey level.
    pub brightness: f32,
    /// Levels are stretched by this around mid-grey.
    pub contrast: f32,
}

impl Augment {
    /// Draw a view for a `w`×`h` image.
    pub fn draw(&self, w: u32, h: u32, rng: &mut impl Rng) -> Transform {
        let quarter_turns = if w == h { rng.random_range(0..4) } else { 2 * rng.random_range(0..2) };
        let angle = rng.random_range(-self.max_rotation_deg..=self.max_rotation_deg).to_radians();
        // After a quarter turn a non-square image is only ever half-turned, so w, h hold.
        let (wf, hf) = (w as f32, h as f32);
        let (c, s) = (angle.cos().abs(), angle.sin().abs());
        let fit = (wf / (wf * c + hf * s)).min(hf / (wf * s + hf * c));
        let (lo, hi) = self.zoom_out;
        Transform {
            flip_h: rng.random_bool(0.5),
            flip_v: rng.random_bool(0.5),
            quarter_turns,
            angle,
            scale: fit * rng.random_range(lo.min(hi)..=hi.max(lo)),
            brightness: rng.random_range(-self.brightness..=self.brightness),
            contrast: 1.0 + rng.random_range(-self.contrast..=self.contrast),
        }
    }
}

impl Transform {
    /// The view of `img`.
    pub fn apply(&self, img: &DynamicImage) -> DynamicImage {
        let (b, k) = (self.brightness, self.contrast);
        let level = move |v: u8| ((v as f32 - 128.0) * k + 128.0 + b).round().clamp(0.0, 255.0) as u8;
        match img {
            DynamicImage::ImageLuma8(g) => {
                let mut out = self.geometry(g);
                out.pixels_mut().for_each(|p| p.0[0] = level(p.0[0]));
                DynamicImage::ImageLuma8(out)
            }
            other => {
                let mut out = self.geometry(&other.to_rgb8());
                out.pixels_mut().for_each(|p| p.0.iter_mut().for_each(|v| *v = level(*v)));
                DynamicImage::ImageRgb8(out)
            }
        }
    }

    /// The same geometry on a mask (no photometry; stays binary at 128).
    pub fn apply_mask(&self, mask: &GrayImage) -> GrayImage {
        let mut out = self.geometry(mask);
        out.pixels_mut().for_each(|p| p.0[0] = if p.0[0] >= 128 { 255 } else { 0 });
        out
    }

    fn geometry<P: Pixel<Subpixel = u8> + 'static>(
        &self,
        img: &ImageBuffer<P, Vec<u8>>,
    ) -> ImageBuffer<P, Vec<u8>> {
        use image::imageops::{flip_horizontal, flip_vertical, rotate90, rotate180, rotate270};
        let mut v = img.clone();
        if self.flip_h {
            v = flip_horizontal(&v);
        }
        if self.flip_v {
            v = flip_vertical(&v);
        }
        v = match self.quarter_turns % 4 {
            1 => rotate90(&v),
            2 => rotate180(&v),
            3 => rotate270(&v),
            _ => v,
        };
        rotate_scale(&v, self.angle, self.scale)
    }
}

/// Rotate by `angle` and scale by `scale` about the centre, bilinear, edge pixels repeated.
fn rotate_scale<P: Pixel<Subpixel = u8>>(
    src: &ImageBuffer<P, Vec<u8>>,
    angle: f32,
    scale: f32,
) -> ImageBuffer<P, Vec<u8>> {
    let (w, h) = src.dimensions();
    let n = P::CHANNEL_COUNT as usize;
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (cos, sin) = (angle.cos(), angle.sin());
    let raw = src.as_raw();
    let at = |x: usize, y: usize, c: usize| raw[(y * w as usize + x) * n + c] as f32;
    let mut out = vec![0u8; raw.len()];
    for v in 0..h {
        for u in 0..w {
            // Inverse map: output pixel → source position.
            let (du, dv) = ((u as f32 - cx) / scale, (v as f32 - cy) / scale);
            let x = (cos * du + sin * dv + cx).clamp(0.0, w as f32 - 1.0);
            let y = (-sin * du + cos * dv + cy).clamp(0.0, h as f32 - 1.0);
            let (x0, y0) = (x.floor() as usize, y.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w as usize - 1), (y0 + 1).min(h as usize - 1));
            let (fx, fy) = (x - x0 as f32, y - y0 as f32);
            for c in 0..n {
                let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
                let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
                out[(v as usize * w as usize + u as usize) * n + c] =
                    (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
        }
    }
    ImageBuffer::from_raw(w, h, out).expect("same size as the source")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kensa_shared::synth::{Surface, SynthSpec, generate};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn defect_area(m: &GrayImage) -> usize {
        m.pixels().filter(|p| p.0[0] >= 128).count()
    }

    #[test]
    fn every_view_keeps_the_defect_in_frame_and_good_parts_stay_good() {
        let aug = Augment::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for seed in 0..40 {
            // Debris anywhere, including at the border, on square and oblong parts.
            let spec = if seed % 2 == 0 {
                SynthSpec::square(Surface::BrushedMetal, 96)
            } else {
                SynthSpec { width: 120, height: 72, ..SynthSpec::square(Surface::Fabric, 96) }
            };
            let part = generate(&spec, seed, true);
            let area = defect_area(&part.mask);
            assert!(area > 0);
            let t = aug.draw(spec.width, spec.height, &mut rng);
            let view = t.apply(&DynamicImage::ImageLuma8(part.image.clone()));
            let mask = t.apply_mask(&part.mask);
            assert_eq!((view.width(), view.height()), (spec.width, spec.height), "{t:?}");
            // The defect shrinks by the zoom-out but is never cut away.
            let kept = defect_area(&mask) as f32 / (area as f32 * t.scale * t.scale);
            assert!(kept > 0.6, "seed {seed}: {kept:.2} of the defect left after {t:?}");
            let good = generate(&spec, seed, false);
            assert_eq!(defect_area(&t.apply_mask(&good.mask)), 0, "a good part gains no defect");
        }
    }

    #[test]
    fn views_are_reproducible_under_a_seed_and_differ_across_seeds() {
        let part = generate(&SynthSpec::square(Surface::Wood, 64), 3, true);
        let img = DynamicImage::ImageLuma8(part.image);
        let view = |seed| {
            let t = Augment::default().draw(64, 64, &mut ChaCha8Rng::seed_from_u64(seed));
            t.apply(&img).into_bytes()
        };
        assert_eq!(view(5), view(5));
        assert_ne!(view(5), view(6));
    }

    #[test]
    fn photometry_is_brightness_and_contrast_about_mid_grey() {
        let t = Transform {
            flip_h: false,
            flip_v: false,
            quarter_turns: 0,
            angle: 0.0,
            scale: 1.0,
            brightness: 10.0,
            contrast: 1.5,
        };
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(4, 1, |x, _| {
            image::Luma([[28, 128, 200, 250][x as usize]])
        }));
        let out = t.apply(&img).to_luma8();
        assert_eq!(out.as_raw(), &vec![0, 138, 246, 255]);
    }
}
