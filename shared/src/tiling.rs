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

/// Puts per-tile maps (each at model resolution) back into one map of the whole image at
/// `scale` = model px per source px, averaging where tiles overlap.
#[derive(Debug, Clone)]
pub struct Stitcher {
    /// Stitched map width.
    pub width: usize,
    /// Stitched map height.
    pub height: usize,
    scale_x: f64,
    scale_y: f64,
    sum: Vec<f32>,
    count: Vec<u16>,
}

impl Stitcher {
    /// A stitcher for a `src_w`×`src_h` image whose `tile_w`×`tile_h` tiles are scored as
    /// `map_w`×`map_h` maps.
    pub fn new(src_w: u32, src_h: u32, tile_w: u32, tile_h: u32, map_w: usize, map_h: usize) -> Self {
        let scale_x = map_w as f64 / tile_w as f64;
        let scale_y = map_h as f64 / tile_h as f64;
        let width = ((src_w as f64 * scale_x).round() as usize).max(1);
        let height = ((src_h as f64 * scale_y).round() as usize).max(1);
        Self {
            width,
            height,
            scale_x,
            scale_y,
            sum: vec![0.0; width * height],
            count: vec![0; width * height],
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
        for v in 0..map_h {
            let y = y0 + v;
            if y >= self.height {
                break;
            }
            for u in 0..map_w {
                let x = x0 + u;
                if x >= self.width {
                    break;
                }
                self.sum[y * self.width + x] += map[v * map_w + u];
                self.count[y * self.width + x] += 1;
            }
        }
    }

    /// The stitched map, row-major `width`×`height`. A pixel no tile reached (only
    /// possible from rounding at the border) takes its left or upper neighbour's value.
    pub fn finish(self) -> Vec<f32> {
        let w = self.width;
        let mut out: Vec<f32> = self
            .sum
            .iter()
            .zip(&self.count)
            .map(|(s, &c)| if c > 0 { s / c as f32 } else { f32::NAN })
            .collect();
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
    fn stitching_places_and_averages_tile_maps() {
        // 8×4 source, tiles of 4 with overlap 2 at half scale -> 2×2 maps, 4×2 result.
        let t = Tiling { tile: 4, overlap: 2 };
        let tiles = t.tiles(8, 4);
        assert_eq!(tiles.iter().map(|t| t.x).collect::<Vec<_>>(), vec![0, 2, 4]);
        let mut s = Stitcher::new(8, 4, 4, 4, 2, 2);
        for (i, tile) in tiles.iter().enumerate() {
            s.add(*tile, &[i as f32; 4], 2, 2);
        }
        assert_eq!((s.width, s.height), (4, 2));
        assert_eq!(s.source_per_map_px(), (2.0, 2.0));
        let m = s.finish();
        // Columns: tile 0 only, tiles 0+1, tiles 1+2, tile 2 only.
        assert_eq!(&m[..4], &[0.0, 0.5, 1.5, 2.0]);
        assert_eq!(&m[..4], &m[4..]);
    }
}
