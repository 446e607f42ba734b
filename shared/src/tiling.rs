//! Tiling: how an image too large to shrink (3872×3200 and up) is cut into model inputs,
//! and how the per-tile anomaly maps are put back together.
//!
//! Shrinking a 3872-px frame to a 256-px model input makes a 12×40 px speck of dust
//! smaller than one pixel. With tiling each `tile`×`tile` crop is scaled to the model
//! input instead, so the speck keeps `model / tile` of its size. Host and box both cut
//! with [`Tiling::tiles`] and stitch with [`Stitcher`], so they see the same pixels.

use serde::{Deserialize, Serialize};

/// Tile geometry in source-image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiling {
    /// Side of a square tile (px of the source image).
    pub tile: u32,
    /// Minimum overlap of neighbouring tiles (px): a defect on a seam is seen whole by
    /// at least one tile when it is smaller than the overlap.
    pub overlap: u32,
}

/// One crop of the source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width (the tile side, or the image width when that is smaller).
    pub w: u32,
    /// Height.
    pub h: u32,
}

/// Errors in a tiling specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilingError {
    /// The tile side is zero.
    #[error("tile size must be at least 1 px")]
    EmptyTile,
    /// Overlap leaves no stride.
    #[error("tile overlap {overlap} px must be smaller than the tile size {tile} px")]
    OverlapTooLarge {
        /// Tile side.
        tile: u32,
        /// Requested overlap.
        overlap: u32,
    },
}

/// Start offsets of tiles of side `tile` along an axis of `len` px: the first at 0, the
/// last flush with the end, evenly spread, neighbours overlapping by at least `overlap`.
fn starts(len: u32, tile: u32, overlap: u32) -> Vec<u32> {
    if len <= tile {
        return vec![0];
    }
    let stride = tile - overlap;
    let n = (len - overlap).div_ceil(stride);
    let span = (len - tile) as u64;
    (0..n as u64).map(|i| ((i * span + (n as u64 - 1) / 2) / (n as u64 - 1)) as u32).collect()
}

impl Tiling {
    /// Check the geometry.
    pub fn validate(&self) -> Result<(), TilingError> {
        if self.tile == 0 {
            return Err(TilingError::EmptyTile);
        }
        if self.overlap >= self.tile {
            return Err(TilingError::OverlapTooLarge { tile: self.tile, overlap: self.overlap });
        }
        Ok(())
    }

    /// Tiles covering a `width`×`height` image, row by row. Every pixel is in at least
    /// one tile; all tiles have the same size.
    pub fn tiles(&self, width: u32, height: u32) -> Vec<Tile> {
        debug_assert!(self.validate().is_ok());
        let (tw, th) = (self.tile.min(width), self.tile.min(height));
        let xs = starts(width, self.tile, self.overlap);
        let ys = starts(height, self.tile, self.overlap);
        ys.iter().flat_map(|&y| xs.iter().map(move |&x| Tile { x, y, w: tw, h: th })).collect()
    }
}

/// `img` cut into the tiles of `tiling`, or whole (as one tile) when there is none.
pub fn crops(tiling: Option<Tiling>, img: &image::DynamicImage) -> Vec<(Tile, image::DynamicImage)> {
    let (w, h) = (img.width(), img.height());
    match tiling {
        None => vec![(Tile { x: 0, y: 0, w, h }, img.clone())],
        Some(t) => t.tiles(w, h).into_iter().map(|c| (c, img.crop_imm(c.x, c.y, c.w, c.h))).collect(),
    }
}

/// An image's score and anomaly map, or one model input's: what the box's runtime and
/// the host's training-time pipeline both produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Image score. A tiled image scores its highest tile; NaN when any tile's is.
    pub score: f32,
    /// Anomaly map, row-major `width`×`height`: the model input resolution, or for a
    /// tiled image the whole image at the tiles' model-px-per-source-px scale.
    pub map: Vec<f32>,
    /// Map width.
    pub width: usize,
    /// Map height.
    pub height: usize,
}

impl Scored {
    /// Source-image px per map px (x, y) for an image of `src_w`×`src_h`.
    pub fn source_per_map_px(&self, src_w: u32, src_h: u32) -> (f64, f64) {
        (src_w as f64 / self.width as f64, src_h as f64 / self.height as f64)
    }

    /// `img` as this map sees it (the model input, or the whole image at map scale), in
    /// the colour policy of `pre`, for overlays.
    pub fn view(&self, pre: &crate::preprocess::Preprocess, img: &image::DynamicImage) -> image::RgbImage {
        crate::preprocess::Preprocess { width: self.width as u32, height: self.height as u32, ..*pre }
            .resized_rgb(img)
    }
}

/// Score `img` the one way host and box both do: cut it into its model inputs (the
/// whole image, or the tiles of `tiling`), score them with `score_crops` (in order, one
/// [`Scored`] each), then combine: a tiled image's maps are stitched at map scale and it
/// scores its highest tile, NaN when any tile is NaN (so it is never passed as OK).
pub fn score_image<E>(
    tiling: Option<Tiling>,
    img: &image::DynamicImage,
    score_crops: impl FnOnce(Vec<image::DynamicImage>) -> Result<Vec<Scored>, E>,
) -> Result<Scored, E> {
    let (tiles, pics): (Vec<Tile>, Vec<image::DynamicImage>) = crops(tiling, img).into_iter().unzip();
    let mut maps = score_crops(pics)?;
    if tiling.is_none() && maps.len() == 1 {
        return Ok(maps.remove(0));
    }
    let Some(first) = maps.first() else {
        return Ok(Scored { score: f32::NAN, map: Vec::new(), width: 0, height: 0 });
    };
    let (t0, mw, mh) = (tiles[0], first.width, first.height);
    let overlap = tiling.map_or(0, |t| t.overlap);
    let mut stitcher = Stitcher::new(img.width(), img.height(), t0.w, t0.h, mw, mh, overlap);
    let mut score = f32::NEG_INFINITY;
    for (tile, m) in tiles.iter().zip(&maps) {
        score = if m.score.is_nan() || score.is_nan() { f32::NAN } else { score.max(m.score) };
        stitcher.add(*tile, &m.map, m.width, m.height);
    }
    if maps.len() != tiles.len() {
        score = f32::NAN; // a tile went unscored: the image is not inspected
    }
    let (width, height) = (stitcher.width, stitcher.height);
    Ok(Scored { score, map: stitcher.finish(), width, height })
}

/// Puts per-tile maps (each at model resolution) back into one map of the whole image at
/// `scale` = model px per source px. Where tiles overlap, each tile's weight falls
/// linearly to almost nothing towards its edge inside the image, so the map crosses a
/// seam without a step and the tile that sees a defect away from its border (a CNN sees
/// least at the border) speaks for it.
#[derive(Debug, Clone)]
pub struct Stitcher {
    /// Stitched map width.
    pub width: usize,
    /// Stitched map height.
    pub height: usize,
    src_w: u32,
    src_h: u32,
    scale_x: f64,
    scale_y: f64,
    /// Width of the fade (map px) on each axis.
    ramp_x: f32,
    ramp_y: f32,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

/// Weight of a map pixel right at a faded tile edge (never 0, so that a pixel only one
/// tile reaches still gets its value).
const EDGE_WEIGHT: f32 = 1e-3;

/// Weight of map pixel `u` of `n` along one axis, fading over `ramp` px at the edges
/// that lie inside the image (`fade_start`, `fade_end`).
fn fade(u: usize, n: usize, ramp: f32, fade_start: bool, fade_end: bool) -> f32 {
    let from_start = if fade_start { (u as f32 + 0.5) / ramp } else { 1.0 };
    let from_end = if fade_end { ((n - u) as f32 - 0.5) / ramp } else { 1.0 };
    from_start.min(from_end).clamp(EDGE_WEIGHT, 1.0)
}

impl Stitcher {
    /// A stitcher for a `src_w`×`src_h` image whose `tile_w`×`tile_h` tiles, overlapping
    /// by at least `overlap` source px, are scored as `map_w`×`map_h` maps.
    pub fn new(
        src_w: u32,
        src_h: u32,
        tile_w: u32,
        tile_h: u32,
        map_w: usize,
        map_h: usize,
        overlap: u32,
    ) -> Self {
        let scale_x = map_w as f64 / tile_w as f64;
        let scale_y = map_h as f64 / tile_h as f64;
        let width = ((src_w as f64 * scale_x).round() as usize).max(1);
        let height = ((src_h as f64 * scale_y).round() as usize).max(1);
        Self {
            width,
            height,
            src_w,
            src_h,
            scale_x,
            scale_y,
            ramp_x: ((overlap as f64 * scale_x) as f32).max(1.0),
            ramp_y: ((overlap as f64 * scale_y) as f32).max(1.0),
            sum: vec![0.0; width * height],
            weight: vec![0.0; width * height],
        }
    }

    /// Source px per stitched map px, horizontally and vertically.
    pub fn source_per_map_px(&self) -> (f64, f64) {
        (1.0 / self.scale_x, 1.0 / self.scale_y)
    }

    /// Add the `map_w`×`map_h` map of `tile`.
    pub fn add(&mut self, tile: Tile, map: &[f32], map_w: usize, map_h: usize) {
        assert_eq!(map.len(), map_w * map_h, "tile map size");
        let x0 = (tile.x as f64 * self.scale_x).round() as usize;
        let y0 = (tile.y as f64 * self.scale_y).round() as usize;
        let (left, right) = (tile.x > 0, tile.x + tile.w < self.src_w);
        let (top, bottom) = (tile.y > 0, tile.y + tile.h < self.src_h);
        let wx: Vec<f32> = (0..map_w).map(|u| fade(u, map_w, self.ramp_x, left, right)).collect();
        for v in 0..map_h {
            let y = y0 + v;
            if y >= self.height {
                break;
            }
            let wy = fade(v, map_h, self.ramp_y, top, bottom);
            for u in 0..map_w {
                let x = x0 + u;
                if x >= self.width {
                    break;
                }
                let w = wx[u] * wy;
                self.sum[y * self.width + x] += w * map[v * map_w + u];
                self.weight[y * self.width + x] += w;
            }
        }
    }

    /// The stitched map, row-major `width`×`height`. A pixel no tile reached (only
    /// possible from rounding at the border) takes its left or upper neighbour's value.
    pub fn finish(self) -> Vec<f32> {
        let w = self.width;
        let mut out: Vec<f32> =
            self.sum.iter().zip(&self.weight).map(|(s, &w)| if w > 0.0 { s / w } else { f32::NAN }).collect();
        for i in 0..out.len() {
            if out[i].is_nan() {
                out[i] = if i % w > 0 {
                    out[i - 1]
                } else if i >= w {
                    out[i - w]
                } else {
                    0.0
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crop scored as a flat map of its mean grey level, score = that level.
    fn grey(crop: &image::DynamicImage) -> Scored {
        let l = crop.to_luma8();
        let mean = l.pixels().map(|p| p[0] as f32).sum::<f32>() / l.len() as f32;
        Scored { score: mean, map: vec![mean; 16], width: 4, height: 4 }
    }

    #[test]
    fn an_image_scores_its_highest_tile_and_nan_anywhere_makes_it_uninspected() {
        let mut img = image::GrayImage::from_pixel(200, 100, image::Luma([10]));
        for y in 0..100 {
            for x in 150..200 {
                img.put_pixel(x, y, image::Luma([250]));
            }
        }
        let img = image::DynamicImage::ImageLuma8(img);
        let tiling = Some(Tiling { tile: 100, overlap: 10 });
        let ok = |crops: Vec<image::DynamicImage>| Ok::<_, ()>(crops.iter().map(grey).collect());
        let s = score_image(tiling, &img, ok).unwrap();
        assert_eq!(s.score, 250.0 * 0.5 + 10.0 * 0.5, "the right tile is half bright");
        assert_eq!((s.width, s.height), (8, 4), "maps stitched at 4 map px per 100 source px");
        let whole = score_image(None, &img, ok).unwrap();
        assert_eq!(whole, grey(&img), "an untiled image is its one crop");
        let nan = |crops: Vec<image::DynamicImage>| {
            let mut v: Vec<Scored> = crops.iter().map(grey).collect();
            v[0].score = f32::NAN;
            Ok::<_, ()>(v)
        };
        assert!(score_image(tiling, &img, nan).unwrap().score.is_nan());
        let short = |crops: Vec<image::DynamicImage>| Ok::<_, ()>(crops.iter().skip(1).map(grey).collect());
        assert!(score_image(tiling, &img, short).unwrap().score.is_nan(), "an unscored tile is not OK");
        assert_eq!(score_image(tiling, &img, |_| Err::<Vec<Scored>, _>("tract")), Err("tract"));
    }

    #[test]
    fn tiles_cover_the_image_with_the_overlap() {
        let t = Tiling { tile: 512, overlap: 64 };
        let tiles = t.tiles(3872, 3200);
        let xs: Vec<u32> = tiles.iter().filter(|t| t.y == 0).map(|t| t.x).collect();
        assert_eq!(xs.first(), Some(&0));
        assert_eq!(xs.last(), Some(&(3872 - 512)));
        for w in xs.windows(2) {
            assert!(w[1] - w[0] <= 512 - 64, "gap between tiles: {xs:?}");
        }
        let mut covered = vec![false; 3872];
        for x in &xs {
            covered[*x as usize..*x as usize + 512].iter_mut().for_each(|c| *c = true);
        }
        assert!(covered.iter().all(|c| *c));
        assert!(tiles.iter().all(|t| t.w == 512 && t.h == 512));
        assert_eq!(tiles.len(), xs.len() * tiles.iter().filter(|t| t.x == 0).count());
    }

    #[test]
    fn small_images_are_one_tile() {
        let t = Tiling { tile: 512, overlap: 64 };
        assert_eq!(t.tiles(300, 200), vec![Tile { x: 0, y: 0, w: 300, h: 200 }]);
        assert_eq!(t.tiles(512, 512).len(), 1);
        assert_eq!(t.tiles(513, 512).len(), 2);
    }

    #[test]
    fn crops_cut_the_tiles_or_keep_the_whole_image() {
        let img =
            image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(10, 6, |x, _| image::Luma([x as u8])));
        let whole = crops(None, &img);
        assert_eq!((whole.len(), whole[0].1.width(), whole[0].1.height()), (1, 10, 6));
        let cut = crops(Some(Tiling { tile: 4, overlap: 1 }), &img);
        assert_eq!(cut.len(), Tiling { tile: 4, overlap: 1 }.tiles(10, 6).len());
        let (t, c) = &cut[1];
        assert_eq!((c.width(), c.height()), (4, 4));
        assert_eq!(c.to_luma8().get_pixel(0, 0)[0], t.x as u8, "crop starts at its tile");
    }

    #[test]
    fn bad_geometry_is_named() {
        assert_eq!(Tiling { tile: 0, overlap: 0 }.validate(), Err(TilingError::EmptyTile));
        let e = Tiling { tile: 64, overlap: 64 }.validate().unwrap_err();
        assert!(e.to_string().contains("overlap 64"), "{e}");
    }

    #[test]
    fn stitching_places_tile_maps_and_blends_their_overlap() {
        // 8×4 source, tiles of 4 with overlap 2 at half scale -> 2×2 maps, 4×2 result.
        let t = Tiling { tile: 4, overlap: 2 };
        let tiles = t.tiles(8, 4);
        assert_eq!(tiles.iter().map(|t| t.x).collect::<Vec<_>>(), vec![0, 2, 4]);
        let mut s = Stitcher::new(8, 4, 4, 4, 2, 2, 2);
        for (i, tile) in tiles.iter().enumerate() {
            s.add(*tile, &[i as f32; 4], 2, 2);
        }
        assert_eq!((s.width, s.height), (4, 2));
        assert_eq!(s.source_per_map_px(), (2.0, 2.0));
        let m = s.finish();
        // The image's own borders keep their one tile's value; inside, values stay
        // between the tiles that overlap there, rising from left to right.
        assert_eq!((m[0], m[3]), (0.0, 2.0));
        assert!(m[1] > 0.0 && m[1] < 1.0 && m[2] > 1.0 && m[2] < 2.0, "{m:?}");
        assert!(m.windows(2).take(3).all(|w| w[0] < w[1]), "{m:?}");
        assert_eq!(&m[..4], &m[4..]);
    }

    #[test]
    fn a_seam_has_no_step_and_the_tile_seeing_a_defect_whole_speaks_for_it() {
        // Two 64-px tiles overlapping by 32 px on a 96-px strip, maps at full scale.
        let t = Tiling { tile: 64, overlap: 32 };
        let tiles = t.tiles(96, 64);
        assert_eq!(tiles.iter().map(|t| t.x).collect::<Vec<_>>(), vec![0, 32]);
        // Tile 0 is calm at 1.0, tile 1 at 3.0: the stitched row must climb gradually.
        let stitch = |a: &dyn Fn(usize) -> f32, b: &dyn Fn(usize) -> f32| {
            let mut s = Stitcher::new(96, 64, 64, 64, 64, 64, 32);
            let row = |f: &dyn Fn(usize) -> f32| -> Vec<f32> { (0..64 * 64).map(|i| f(i % 64)).collect() };
            s.add(tiles[0], &row(a), 64, 64);
            s.add(tiles[1], &row(b), 64, 64);
            s.finish()[..96].to_vec()
        };
        let m = stitch(&|_| 1.0, &|_| 3.0);
        let step = m.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0f32, f32::max);
        assert!(step < 2.0 / 16.0, "largest jump {step} between neighbours: {m:?}");
        // A defect at source x 56..62: near tile 0's right edge (seen weakly, 2.0) and
        // well inside tile 1 (seen whole, 10.0 at its local x 24..30).
        let m = stitch(&|u| if (56..62).contains(&u) { 2.0 } else { 0.0 }, &|u| {
            if (24..30).contains(&u) { 10.0 } else { 0.0 }
        });
        assert!(m[56..62].iter().all(|&v| v > 6.0), "the whole defect stays strong: {:?}", &m[56..62]);
    }
}
