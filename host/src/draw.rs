//! Pictures a person reads: heat-map overlays with ground truth and boxes, ROC curves,
//! score histograms. Pure functions from numbers to RGB images.

use font8x8::UnicodeFonts;
use image::{GrayImage, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;

use kensa_core::heads::classifier::Epoch;
use kensa_core::map::DefectBox;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([200, 200, 200]);
const GOOD: Rgb<u8> = Rgb([40, 120, 220]);
const BAD: Rgb<u8> = Rgb([220, 50, 40]);
const TRUTH: Rgb<u8> = Rgb([0, 230, 0]);

/// Write `text` with the 8×8 bitmap font, each font pixel `scale`×`scale`.
pub fn text(img: &mut RgbImage, x: i32, y: i32, scale: u32, s: &str, colour: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else { continue };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = x + ((i * 8 + col) as u32 * scale) as i32;
                    let py = y + (row as u32 * scale) as i32;
                    draw_filled_rect_mut(img, Rect::at(px, py).of_size(scale, scale), colour);
                }
            }
        }
    }
}

/// Blue → cyan → yellow → red ramp for `t` in [0, 1].
pub fn heat(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    let stops =
        [(0.0, [0.0, 0.0, 0.5]), (0.3, [0.0, 0.6, 1.0]), (0.6, [1.0, 1.0, 0.0]), (1.0, [0.9, 0.0, 0.0])];
    let k = stops.windows(2).position(|w| t <= w[1].0).unwrap_or(2);
    let ((t0, a), (t1, b)) = (stops[k], stops[k + 1]);
    let f = (t - t0) / (t1 - t0);
    Rgb([0, 1, 2].map(|c| (255.0 * (a[c] + (b[c] - a[c]) * f)) as u8))
}

/// Height of the colour legend under each overlay (px).
const LEGEND: u32 = 22;

/// The model's view of the part with the anomaly map blended in (scaled to
/// `[lo, hi]`), the ground-truth outline in green and predicted boxes in red, stretched
/// back to the `source` image's aspect ratio, with a colour legend under it.
pub fn overlay(
    image: &RgbImage,
    map: &[f32],
    (lo, hi): (f32, f32),
    truth: Option<&GrayImage>,
    boxes: &[DefectBox],
    source: (u32, u32),
) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut blended = RgbImage::new(w, h);
    for (x, y, p) in blended.enumerate_pixels_mut() {
        let v = map[(y * w + x) as usize];
        let t = ((v - lo) / (hi - lo).max(1e-6)).clamp(0.0, 1.0);
        let alpha = 0.15 + 0.5 * t;
        let (c, base) = (heat(t), image.get_pixel(x, y));
        *p = Rgb([0, 1, 2].map(|i| (base[i] as f32 * (1.0 - alpha) + c[i] as f32 * alpha) as u8));
    }
    // Keep the longer side, so a tiled map keeps its detail and a wide part stays wide.
    let (ow, oh) = aspect_size((w, h), source);
    let mut out = RgbImage::new(ow, oh + LEGEND);
    image::imageops::replace(
        &mut out,
        &image::imageops::resize(&blended, ow, oh, image::imageops::FilterType::Triangle),
        0,
        0,
    );
    let (sx, sy) = (ow as f32 / w as f32, oh as f32 / h as f32);
    if let Some(m) = truth {
        let m = image::imageops::resize(m, ow, oh, image::imageops::FilterType::Nearest);
        let inside = |x: i64, y: i64| {
            x >= 0 && y >= 0 && x < ow as i64 && y < oh as i64 && m.get_pixel(x as u32, y as u32)[0] > 0
        };
        for y in 0..oh as i64 {
            for x in 0..ow as i64 {
                let edge = inside(x, y)
                    && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1));
                if edge {
                    out.put_pixel(x as u32, y as u32, TRUTH);
                }
            }
        }
    }
    for b in boxes {
        let (x0, y0) = ((b.x0 as f32 * sx) as i32, (b.y0 as f32 * sy) as i32);
        let (x1, y1) = (((b.x1 + 1) as f32 * sx).ceil() as i32, ((b.y1 + 1) as f32 * sy).ceil() as i32);
        for grow in 1..=2 {
            let r = Rect::at(x0 - grow, y0 - grow)
                .of_size((x1 - x0 + 2 * grow) as u32, (y1 - y0 + 2 * grow) as u32);
            draw_hollow_rect_mut(&mut out, r, BAD);
        }
    }
    legend(&mut out, oh, (lo, hi));
    out
}

/// Output size with `source`'s aspect ratio and the longer side of `map`.
fn aspect_size((w, h): (u32, u32), (sw, sh): (u32, u32)) -> (u32, u32) {
    if sw == 0 || sh == 0 {
        return (w, h);
    }
    let side = w.max(h) as f32;
    if sw >= sh {
        (side as u32, ((side * sh as f32 / sw as f32).round() as u32).max(1))
    } else {
        (((side * sw as f32 / sh as f32).round() as u32).max(1), side as u32)
    }
}

/// The colour ramp with its end scores, in the strip from row `top` down.
fn legend(img: &mut RgbImage, top: u32, (lo, hi): (f32, f32)) {
    let w = img.width();
    draw_filled_rect_mut(img, Rect::at(0, top as i32).of_size(w, LEGEND), WHITE);
    let (left, right) = (4u32, w.saturating_sub(4));
    for x in left..right.max(left + 1) {
        let t = (x - left) as f32 / (right - left).max(1) as f32;
        for y in top + 2..top + 10 {
            img.put_pixel(x.min(w - 1), y, heat(t));
        }
    }
    text(img, left as i32, (top + 12) as i32, 1, &format!("{lo:.2}"), BLACK);
    let hi_label = format!("{hi:.2}");
    let x = w as i32 - 4 - 8 * hi_label.len() as i32;
    text(img, x, (top + 12) as i32, 1, &hi_label, BLACK);
}

/// Plot frame: white canvas, axes box, returns a mapper from data to pixels.
struct Plot {
    img: RgbImage,
    left: f32,
    top: f32,
    width: f32,
    height: f32,
}

impl Plot {
    fn new(w: u32, h: u32, title: &str) -> Self {
        let mut img = RgbImage::from_pixel(w, h, WHITE);
        text(&mut img, 10, 8, 2, title, BLACK);
        let (left, top) = (60.0, 40.0);
        let (width, height) = (w as f32 - left - 20.0, h as f32 - top - 50.0);
        draw_hollow_rect_mut(
            &mut img,
            Rect::at(left as i32, top as i32).of_size(width as u32, height as u32),
            BLACK,
        );
        Self { img, left, top, width, height }
    }

    fn at(&self, x: f32, y: f32) -> (f32, f32) {
        (self.left + x * self.width, self.top + (1.0 - y) * self.height)
    }

    fn line(&mut self, a: (f32, f32), b: (f32, f32), c: Rgb<u8>) {
        let (p, q) = (self.at(a.0, a.1), self.at(b.0, b.1));
        draw_line_segment_mut(&mut self.img, p, q, c);
        draw_line_segment_mut(&mut self.img, (p.0, p.1 + 1.0), (q.0, q.1 + 1.0), c);
    }

    fn label(&mut self, x: f32, y: f32, s: &str) {
        let (px, py) = self.at(x, y);
        text(&mut self.img, px as i32, py as i32, 1, s, BLACK);
    }
}

/// ROC curve with the chance diagonal; `points` are `(fpr, tpr)`.
pub fn roc(points: &[(f64, f64)], auroc: f64) -> RgbImage {
    let mut p = Plot::new(480, 480, &format!("ROC  AUROC {auroc:.3}"));
    for i in 1..10 {
        let v = i as f32 / 10.0;
        p.line((v, 0.0), (v, 1.0), GREY);
        p.line((0.0, v), (1.0, v), GREY);
    }
    p.line((0.0, 0.0), (1.0, 1.0), GREY);
    for w in points.windows(2) {
        p.line((w[0].0 as f32, w[0].1 as f32), (w[1].0 as f32, w[1].1 as f32), BAD);
    }
    for v in [0.0, 0.5, 1.0] {
        p.label(v - 0.02, -0.03, &format!("{v:.1}"));
        p.label(-0.1, v + 0.01, &format!("{v:.1}"));
    }
    p.label(0.3, -0.08, "false-positive rate");
    text(&mut p.img, 4, 30, 1, "true-positive rate", BLACK);
    p.img
}

/// Histograms of good and defective image scores with the threshold as a line.
pub fn histogram(good: &[f32], defective: &[f32], threshold: f32) -> RgbImage {
    let all = good.iter().chain(defective).copied().chain([threshold]).filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-6);
    const BINS: usize = 30;
    let count = |xs: &[f32]| {
        let mut c = [0usize; BINS];
        for &v in xs {
            c[(((v - lo) / span) * BINS as f32).clamp(0.0, BINS as f32 - 1.0) as usize] += 1;
        }
        c
    };
    let (cg, cd) = (count(good), count(defective));
    let peak = cg.iter().chain(&cd).copied().max().unwrap_or(1).max(1) as f32;
    let mut p = Plot::new(640, 400, "scores: good (blue), defective (red)");
    for (i, (g, d)) in cg.iter().zip(&cd).enumerate() {
        let x0 = i as f32 / BINS as f32;
        let half = 0.5 / BINS as f32;
        for (n, c, off) in [(*g, GOOD, 0.0), (*d, BAD, half)] {
            if n > 0 {
                let (a, b) = (p.at(x0 + off, n as f32 / peak), p.at(x0 + off + half, 0.0));
                let r = Rect::at(a.0 as i32, a.1 as i32)
                    .of_size(((b.0 - a.0) as u32).max(1), ((b.1 - a.1) as u32).max(1));
                draw_filled_rect_mut(&mut p.img, r, c);
            }
        }
    }
    if threshold.is_finite() {
        let t = (threshold - lo) / span;
        p.line((t, 0.0), (t, 1.0), BLACK);
        p.label(t + 0.01, 0.97, &format!("threshold {threshold:.3}"));
    }
    p.label(0.0, -0.03, &format!("{lo:.2}"));
    p.label(0.92, -0.03, &format!("{hi:.2}"));
    p.label(0.4, -0.08, "anomaly score");
    p.img
}

/// Training curves: loss (left) and accuracy (right) per epoch, training views in blue,
/// validation images in red.
pub fn curves(epochs: &[Epoch]) -> RgbImage {
    let n = epochs.len().max(2) as f32 - 1.0;
    let finite = |v: f32| v.is_finite().then_some(v);
    let panel = |title: &str, get: &dyn Fn(&Epoch) -> (f32, f32), fixed: Option<(f32, f32)>| {
        let values = epochs.iter().flat_map(|e| [get(e).0, get(e).1]).filter_map(finite);
        let (lo, hi) = fixed.unwrap_or_else(|| {
            values.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
        });
        let (lo, hi) = if lo.is_finite() { (lo.min(0.0), hi.max(lo + 1e-3)) } else { (0.0, 1.0) };
        let mut p = Plot::new(480, 360, title);
        let y = |v: f32| (v - lo) / (hi - lo);
        for (which, colour) in [(0, GOOD), (1, BAD)] {
            let pick = |e: &Epoch| if which == 0 { get(e).0 } else { get(e).1 };
            for (i, w) in epochs.windows(2).enumerate() {
                let (a, b) = (pick(&w[0]), pick(&w[1]));
                if a.is_finite() && b.is_finite() {
                    p.line((i as f32 / n, y(a)), ((i + 1) as f32 / n, y(b)), colour);
                }
            }
        }
        p.label(0.0, -0.03, "1");
        p.label(0.9, -0.03, &format!("{}", epochs.len()));
        p.label(0.4, -0.08, "epoch");
        p.label(-0.12, 1.0, &format!("{hi:.2}"));
        p.label(-0.12, 0.0, &format!("{lo:.2}"));
        p.img
    };
    let loss = panel("loss: train (blue), val (red)", &|e| (e.train_loss, e.val_loss), None);
    let acc = panel("accuracy", &|e| (e.train_accuracy, e.val_accuracy), Some((0.0, 1.0)));
    let mut out = RgbImage::from_pixel(loss.width() + acc.width(), loss.height(), WHITE);
    image::imageops::replace(&mut out, &loss, 0, 0);
    image::imageops::replace(&mut out, &acc, loss.width() as i64, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_marks_truth_and_boxes() {
        let img = RgbImage::from_pixel(20, 20, Rgb([128, 128, 128]));
        let map = vec![0.0f32; 400];
        let mut truth = GrayImage::new(20, 20);
        for y in 5..10 {
            for x in 5..10 {
                truth.put_pixel(x, y, image::Luma([255]));
            }
        }
        let b = DefectBox { x0: 12, y0: 12, x1: 15, y1: 15, peak: 1.0, area: 16 };
        let o = overlay(&img, &map, (0.0, 1.0), Some(&truth), &[b], (20, 20));
        assert_eq!(*o.get_pixel(5, 5), TRUTH);
        assert_ne!(*o.get_pixel(7, 7), TRUTH, "interior is not outline");
        assert_eq!(*o.get_pixel(11, 13), BAD);
        assert_eq!(o.dimensions(), (20, 20 + LEGEND), "the legend goes under the picture");
        assert_eq!(*o.get_pixel(4, 20 + 4), heat(0.0), "the legend starts at the low end of the ramp");
    }

    #[test]
    fn overlays_keep_the_source_images_aspect_ratio() {
        // A 256×256 model view of a 400×100 part: shown 256×64, boxes scaled with it.
        let img = RgbImage::from_pixel(256, 256, Rgb([128, 128, 128]));
        let map = vec![0.0f32; 256 * 256];
        let b = DefectBox { x0: 100, y0: 100, x1: 120, y1: 140, peak: 1.0, area: 800 };
        let o = overlay(&img, &map, (0.0, 1.0), None, &[b], (400, 100));
        assert_eq!(o.dimensions(), (256, 64 + LEGEND));
        assert_eq!(*o.get_pixel(99, 30), BAD, "left edge of the box, at a quarter of its height");
        assert_eq!(aspect_size((256, 256), (100, 400)), (64, 256));
    }

    #[test]
    fn heat_ramp_runs_blue_to_red() {
        assert!(heat(0.0)[2] > heat(0.0)[0]);
        assert!(heat(1.0)[0] > heat(1.0)[2]);
    }
}
