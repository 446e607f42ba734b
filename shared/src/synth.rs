//! Deterministic generator for the classic line case: small rectangular debris of random
//! size and orientation on a textured surface, with a pixel-exact mask.
//!
//! `kensa synth` writes datasets from it and the box's synthetic conveyor draws its parts
//! from it, so a demo, a test and the field simulation all see the same kind of images.
//! Everything is a pure function of `(spec, seed)`: the same seed gives the same bytes on
//! every machine. Trigonometry goes through the pure-Rust `libm` rather than the platform's
//! maths library, whose last-bit results differ between x86 and aarch64.

use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Surface finishes the generator can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Surface {
    /// Fine directional streaks, slightly wavy, as on ground or brushed sheet metal.
    BrushedMetal,
    /// Plain-weave textile: alternating warp and weft threads.
    Fabric,
    /// Growth rings distorted by low-frequency noise, with fibre grain.
    Wood,
    /// Low-contrast mottling and grain of injection-moulded plastic.
    MattePlastic,
}

impl Surface {
    /// All surfaces, in a fixed order.
    pub const ALL: [Surface; 4] = [Self::BrushedMetal, Self::Fabric, Self::Wood, Self::MattePlastic];

    /// Kebab-case name used on the command line and in folder names.
    pub fn name(self) -> &'static str {
        match self {
            Self::BrushedMetal => "brushed-metal",
            Self::Fabric => "fabric",
            Self::Wood => "wood",
            Self::MattePlastic => "matte-plastic",
        }
    }

    /// Parse a [`Surface::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One rectangular piece of debris, in pixel coordinates of the image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Debris {
    /// Centre, x (px).
    pub cx: f32,
    /// Centre, y (px).
    pub cy: f32,
    /// Long side (px).
    pub length: f32,
    /// Short side (px).
    pub width: f32,
    /// Orientation of the long side, radians from the x axis.
    pub angle: f32,
    /// Grey level of the debris (0–255).
    pub level: u8,
}

impl Debris {
    /// Axis-aligned bounding box `(x0, y0, x1, y1)`, inclusive, clipped to the image.
    pub fn bbox(&self, width: u32, height: u32) -> (u32, u32, u32, u32) {
        let (c, s) = (libm::cosf(self.angle).abs(), libm::sinf(self.angle).abs());
        let hx = 0.5 * (self.length * c + self.width * s);
        let hy = 0.5 * (self.length * s + self.width * c);
        let clip = |v: f32, max: u32| v.clamp(0.0, (max - 1) as f32) as u32;
        (
            clip((self.cx - hx).floor(), width),
            clip((self.cy - hy).floor(), height),
            clip((self.cx + hx).ceil(), width),
            clip((self.cy + hy).ceil(), height),
        )
    }
}

/// A generated image with its ground truth.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The 8-bit grey image.
    pub image: GrayImage,
    /// 255 where debris covers at least half a pixel, else 0.
    pub mask: GrayImage,
    /// The debris drawn (empty for a good part).
    pub debris: Vec<Debris>,
}

impl Sample {
    /// Draw `d` onto the part and its mask (for placing a defect of a chosen size).
    pub fn add_debris(&mut self, d: Debris) {
        paint(&mut self.image, &mut self.mask, &d);
        self.debris.push(d);
    }

    /// True when the sample contains a defect.
    pub fn is_defective(&self) -> bool {
        !self.debris.is_empty()
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SynthSpec {
    /// Surface finish.
    pub surface: Surface,
    /// Image width (px).
    pub width: u32,
    /// Image height (px).
    pub height: u32,
    /// Shortest debris long side (px).
    pub min_debris: f32,
    /// Longest debris long side (px).
    pub max_debris: f32,
}

impl SynthSpec {
    /// A `size`×`size` image with debris from 3 % to 12 % of the side.
    pub fn square(surface: Surface, size: u32) -> Self {
        let s = size as f32;
        Self {
            surface,
            width: size,
            height: size,
            min_debris: (0.03 * s).max(4.0),
            max_debris: (0.12 * s).max(8.0),
        }
    }
}

/// Generate one part. `defective` parts carry one piece of debris.
pub fn generate(spec: &SynthSpec, seed: u64, defective: bool) -> Sample {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut image = texture(spec, &mut rng);
    let mut mask = GrayImage::new(spec.width, spec.height);
    let mut debris = Vec::new();
    if defective {
        let d = random_debris(spec, &image, &mut rng);
        paint(&mut image, &mut mask, &d);
        debris.push(d);
    }
    Sample { image, mask, debris }
}

fn random_debris(spec: &SynthSpec, image: &GrayImage, rng: &mut ChaCha8Rng) -> Debris {
    let length = rng.random_range(spec.min_debris..=spec.max_debris);
    let width = (length * rng.random_range(0.2f32..0.6)).max(2.0);
    let margin = 0.5 * length + 2.0;
    let cx = rng.random_range(margin..(spec.width as f32 - margin).max(margin + 1.0));
    let cy = rng.random_range(margin..(spec.height as f32 - margin).max(margin + 1.0));
    let angle = rng.random_range(0.0f32..std::f32::consts::PI);
    // Dust is usually darker than a bright surface and lighter than a dark one; either way
    // it must stand out from the local texture by a visible but not glaring margin.
    let local = image.get_pixel(cx as u32, cy as u32)[0] as f32;
    let delta = rng.random_range(45.0f32..90.0);
    let level = if local > 110.0 { local - delta } else { local + delta };
    Debris { cx, cy, length, width, angle, level: level.clamp(0.0, 255.0) as u8 }
}

/// Draw the debris with anti-aliased edges (4×4 supersampling) and mark its mask.
fn paint(image: &mut GrayImage, mask: &mut GrayImage, d: &Debris) {
    let (x0, y0, x1, y1) = d.bbox(image.width(), image.height());
    let (c, s) = (libm::cosf(d.angle), libm::sinf(d.angle));
    for y in y0..=y1 {
        for x in x0..=x1 {
            let mut hits = 0u32;
            for sy in 0..4 {
                for sx in 0..4 {
                    let px = x as f32 + (sx as f32 + 0.5) / 4.0 - 0.5 - d.cx;
                    let py = y as f32 + (sy as f32 + 0.5) / 4.0 - 0.5 - d.cy;
                    let u = px * c + py * s;
                    let v = -px * s + py * c;
                    if u.abs() <= 0.5 * d.length && v.abs() <= 0.5 * d.width {
                        hits += 1;
                    }
                }
            }
            if hits == 0 {
                continue;
            }
            let a = hits as f32 / 16.0;
            let p = image.get_pixel_mut(x, y);
            p[0] = (p[0] as f32 * (1.0 - a) + d.level as f32 * a).round() as u8;
            if hits >= 8 {
                mask.put_pixel(x, y, Luma([255]));
            }
        }
    }
}

/// Smooth lattice noise in [-1, 1]: random values on a grid, smoothstep-interpolated.
struct ValueNoise {
    grid: Vec<f32>,
    cols: usize,
    cell_x: f32,
    cell_y: f32,
}

impl ValueNoise {
    fn new(rng: &mut ChaCha8Rng, width: u32, height: u32, cell_x: f32, cell_y: f32) -> Self {
        let cols = (width as f32 / cell_x) as usize + 3;
        let rows = (height as f32 / cell_y) as usize + 3;
        let grid = (0..cols * rows).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Self { grid, cols, cell_x, cell_y }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (gx, gy) = ((x / self.cell_x).max(0.0), (y / self.cell_y).max(0.0));
        let (ix, iy) = (gx as usize, gy as usize);
        let rows = self.grid.len() / self.cols;
        let (ix, iy) = (ix.min(self.cols - 2), iy.min(rows - 2));
        let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
        let (fx, fy) = (smooth((gx - ix as f32).min(1.0)), smooth((gy - iy as f32).min(1.0)));
        let g = |cx: usize, cy: usize| self.grid[cy * self.cols + cx];
        let top = g(ix, iy) * (1.0 - fx) + g(ix + 1, iy) * fx;
        let bottom = g(ix, iy + 1) * (1.0 - fx) + g(ix + 1, iy + 1) * fx;
        top * (1.0 - fy) + bottom * fy
    }
}

fn texture(spec: &SynthSpec, rng: &mut ChaCha8Rng) -> GrayImage {
    let (w, h) = (spec.width, spec.height);
    // Part-to-part variation every real line has: exposure and a light gradient.
    let gain = rng.random_range(0.92f32..1.08);
    let (gx, gy) = (rng.random_range(-12.0f32..12.0), rng.random_range(-12.0f32..12.0));
    let light = move |x: u32, y: u32| gx * (x as f32 / w as f32 - 0.5) + gy * (y as f32 / h as f32 - 0.5);
    let grain = ValueNoise::new(rng, w, h, 1.0, 1.0);
    let field: Box<dyn Fn(u32, u32) -> f32> = match spec.surface {
        Surface::BrushedMetal => {
            let streaks = ValueNoise::new(rng, w, h, 48.0, 1.2);
            let wave = ValueNoise::new(rng, w, h, 64.0, 64.0);
            let sheen = ValueNoise::new(rng, w, h, 90.0, 90.0);
            Box::new(move |x, y| {
                let (xf, yf) = (x as f32, y as f32);
                150.0 + 22.0 * streaks.at(xf, yf + 3.0 * wave.at(xf, yf)) + 14.0 * sheen.at(xf, yf)
            })
        }
        Surface::Fabric => {
            let period = rng.random_range(7.0f32..11.0);
            let phase = rng.random_range(0.0..period);
            let slub = ValueNoise::new(rng, w, h, 20.0, 20.0);
            Box::new(move |x, y| {
                let (u, v) = ((x as f32 + phase) / period, (y as f32 + phase) / period);
                let over = (u.floor() as i64 + v.floor() as i64) % 2 == 0;
                // The thread on top is lit across its width: bright centre, dark edges.
                let across = if over { u.fract() } else { v.fract() };
                let shade = libm::sinf(std::f32::consts::PI * across);
                95.0 + 70.0 * shade + 10.0 * slub.at(x as f32, y as f32)
            })
        }
        Surface::Wood => {
            let ring = rng.random_range(9.0f32..16.0);
            let warp = ValueNoise::new(rng, w, h, 70.0, 50.0);
            let fibre = ValueNoise::new(rng, w, h, 24.0, 1.5);
            Box::new(move |x, y| {
                let (xf, yf) = (x as f32, y as f32);
                let t = (yf + 14.0 * warp.at(xf, yf)) / ring;
                let band = 0.5 + 0.5 * libm::sinf(std::f32::consts::TAU * t);
                105.0 + 45.0 * band * band * band + 10.0 * fibre.at(xf, yf)
            })
        }
        Surface::MattePlastic => {
            let mottle = ValueNoise::new(rng, w, h, 28.0, 28.0);
            let fine = ValueNoise::new(rng, w, h, 6.0, 6.0);
            Box::new(move |x, y| {
                let (xf, yf) = (x as f32, y as f32);
                85.0 + 9.0 * mottle.at(xf, yf) + 5.0 * fine.at(xf, yf)
            })
        }
    };
    GrayImage::from_fn(w, h, |x, y| {
        let v = gain * field(x, y) + light(x, y) + 5.0 * grain.at(x as f32, y as f32);
        Luma([v.round().clamp(0.0, 255.0) as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_pixels_different_seed_different_pixels() {
        for surface in Surface::ALL {
            let spec = SynthSpec::square(surface, 96);
            let a = generate(&spec, 11, true);
            let b = generate(&spec, 11, true);
            let c = generate(&spec, 12, true);
            assert_eq!(a.image, b.image, "{surface:?}");
            assert_eq!(a.mask, b.mask);
            assert_ne!(a.image, c.image);
        }
    }

    #[test]
    fn mask_covers_the_debris_and_only_defective_parts_have_one() {
        for (i, surface) in Surface::ALL.into_iter().enumerate() {
            let spec = SynthSpec::square(surface, 128);
            let good = generate(&spec, i as u64, false);
            assert!(!good.is_defective());
            assert!(good.mask.pixels().all(|p| p[0] == 0));

            let bad = generate(&spec, i as u64, true);
            let d = bad.debris[0];
            let area = bad.mask.pixels().filter(|p| p[0] == 255).count() as f32;
            let expected = d.length * d.width;
            assert!((area - expected).abs() <= 0.35 * expected + 6.0, "{surface:?}: {area} vs {expected}");
            // The mask lies inside the debris bounding box.
            let (x0, y0, x1, y1) = d.bbox(128, 128);
            for (x, y, p) in bad.mask.enumerate_pixels() {
                if p[0] == 255 {
                    assert!(x >= x0 && x <= x1 && y >= y0 && y <= y1);
                }
            }
            // And the debris is visible: masked pixels differ from the same part without it.
            let diff: f32 = bad
                .mask
                .enumerate_pixels()
                .filter(|(_, _, p)| p[0] == 255)
                .map(|(x, y, _)| {
                    (bad.image.get_pixel(x, y)[0] as f32 - good.image.get_pixel(x, y)[0] as f32).abs()
                })
                .sum::<f32>()
                / area;
            assert!(diff > 25.0, "{surface:?}: mean contrast {diff}");
        }
    }

    #[test]
    fn surfaces_are_textured_not_flat() {
        for surface in Surface::ALL {
            let img = generate(&SynthSpec::square(surface, 128), 3, false).image;
            let n = img.len() as f32;
            let mean = img.pixels().map(|p| p[0] as f32).sum::<f32>() / n;
            let var = img.pixels().map(|p| (p[0] as f32 - mean).powi(2)).sum::<f32>() / n;
            assert!(var.sqrt() > 3.0, "{surface:?} std {}", var.sqrt());
            assert!((40.0..220.0).contains(&mean), "{surface:?} mean {mean}");
        }
    }
}
