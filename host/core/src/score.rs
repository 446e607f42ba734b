//! The training-time scoring pipeline: preprocess → backbone (tract) → embed → head →
//! map → score, for whole images and tiled ones. Tiles are combined by
//! `kensa_shared::tiling::score_image`, the code the box's runtime uses, into the same
//! [`Scored`] type.

use image::DynamicImage;
use kensa_shared::preprocess::Preprocess;
pub use kensa_shared::tiling::Scored;
use kensa_shared::tiling::{Tile, score_image};
use rayon::prelude::*;

use crate::backbone::Backbone;
use crate::error::Result;
use crate::model::TrainedModel;
use crate::{embed, map};

impl TrainedModel {
    /// Map and score of one model input's embedded patches.
    pub fn score_patches(&self, pt: &embed::Patches) -> Scored {
        let p = self.preprocess;
        let (h, w) = (p.height as usize, p.width as usize);
        let m = map::anomaly_map(&self.head.patch_scores(pt), pt.h, pt.w, h, w);
        Scored { score: map::image_score(&m, w, self.score_top_share), map: m, width: w, height: h }
    }

    /// The model inputs cut from `img`: its tiles, or the whole image as one "tile".
    pub fn crops(&self, img: &DynamicImage) -> Vec<(Tile, DynamicImage)> {
        kensa_shared::tiling::crops(self.tiling, img)
    }
}

/// Images per backbone run.
pub const BATCH: usize = 4;

/// Preprocess `images` and extract patch embeddings, in order, using all cores.
pub fn extract_patches(
    backbone: &Backbone,
    pre: &Preprocess,
    images: &[DynamicImage],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<embed::Patches>> {
    let chunks: Vec<Vec<embed::Patches>> = images
        .par_chunks(backbone.batch)
        .map(|chunk| {
            let mut input = Vec::with_capacity(chunk.len() * pre.len());
            for img in chunk {
                input.extend(pre.apply(img));
            }
            let maps = backbone.run(&input, chunk.len())?;
            progress(chunk.len());
            Ok(maps.iter().map(|m| embed::embed(m)).collect())
        })
        .collect::<Result<_>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// Wall time of each scoring stage for one image (for a tiled model, summed over its
/// tiles).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Model inputs the image was cut into (1 when untiled).
    pub tiles: usize,
    /// Cutting the image into tiles and blending their maps into one (0 when untiled).
    pub tiling: std::time::Duration,
    /// Resize and colour conversion.
    pub preprocess: std::time::Duration,
    /// CNN forward pass (tract).
    pub backbone: std::time::Duration,
    /// Pooling, alignment and concatenation of feature maps.
    pub embed: std::time::Duration,
    /// Nearest-neighbour search (PatchCore) or Mahalanobis distances (PaDiM).
    pub head: std::time::Duration,
    /// Upsampling, blur and image score.
    pub map: std::time::Duration,
}

impl StageTimes {
    /// Sum of the stages.
    pub fn total(&self) -> std::time::Duration {
        self.model_inputs() + self.tiling
    }

    /// The stages that run once per model input (everything but tiling).
    fn model_inputs(&self) -> std::time::Duration {
        self.preprocess + self.backbone + self.embed + self.head + self.map
    }

    fn add(&mut self, t: &StageTimes) {
        self.tiles += t.tiles;
        self.preprocess += t.preprocess;
        self.backbone += t.backbone;
        self.embed += t.embed;
        self.head += t.head;
        self.map += t.map;
    }
}

/// The training-time scoring pipeline.
#[derive(Debug, Clone)]
pub struct Scorer {
    backbone: Backbone,
    /// The model scored with.
    pub model: TrainedModel,
}

impl Scorer {
    /// Load the backbone for the model's input size, running [`BATCH`] images at a time.
    pub fn new(model: TrainedModel) -> Result<Self> {
        Self::with_batch(model, BATCH)
    }

    /// Load the backbone running `batch` images at a time (1 for one image at a time:
    /// a partly filled batch costs as much as a full one).
    pub fn with_batch(model: TrainedModel, batch: usize) -> Result<Self> {
        let p = model.preprocess;
        let backbone =
            Backbone::load(&model.backbone, &model.features, p.height as usize, p.width as usize, batch)?;
        Ok(Self { backbone, model })
    }

    /// Score one image on the calling thread, timing each stage; a tiled model's tiles
    /// run one after another, each stage summed over them, and the cutting and blending
    /// is timed as `tiling`. The scores are those of [`Self::score`].
    pub fn score_timed(&self, img: &DynamicImage) -> Result<(Scored, StageTimes)> {
        if self.model.tiling.is_none() {
            return self.score_input_timed(img);
        }
        let started = std::time::Instant::now();
        let mut times = StageTimes::default();
        let scored = score_image(self.model.tiling, img, |crops| {
            crops
                .iter()
                .map(|crop| {
                    let (s, t) = self.score_input_timed(crop)?;
                    times.add(&t);
                    Ok(s)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        times.tiling = started.elapsed().saturating_sub(times.model_inputs());
        Ok((scored, times))
    }

    /// [`Self::score_timed`] of one model input (a whole untiled image or one tile).
    fn score_input_timed(&self, img: &DynamicImage) -> Result<(Scored, StageTimes)> {
        let t0 = std::time::Instant::now();
        let input = self.model.preprocess.apply(img);
        let t1 = std::time::Instant::now();
        let maps = self.backbone.run(&input, 1)?;
        let t2 = std::time::Instant::now();
        let patches = embed::embed(&maps[0]);
        let t3 = std::time::Instant::now();
        let grid = self.patch_scores(&patches);
        let t4 = std::time::Instant::now();
        let p = self.model.preprocess;
        let m = map::anomaly_map(&grid, patches.h, patches.w, p.height as usize, p.width as usize);
        let scored = Scored {
            score: map::image_score(&m, p.width as usize, self.model.score_top_share),
            map: m,
            width: p.width as usize,
            height: p.height as usize,
        };
        let t5 = std::time::Instant::now();
        Ok((
            scored,
            StageTimes {
                tiles: 1,
                tiling: std::time::Duration::ZERO,
                preprocess: t1 - t0,
                backbone: t2 - t1,
                embed: t3 - t2,
                head: t4 - t3,
                map: t5 - t4,
            },
        ))
    }

    /// Patch-score grid of embedded patches.
    pub fn patch_scores(&self, p: &embed::Patches) -> Vec<f32> {
        self.model.head.patch_scores(p)
    }

    /// Score images (both cores); `progress` is told how many finished.
    pub fn score(&self, images: &[DynamicImage], progress: &(dyn Fn(usize) + Sync)) -> Result<Vec<Scored>> {
        match self.model.tiling {
            None => {
                let patches = extract_patches(&self.backbone, &self.model.preprocess, images, &|_| ())?;
                Ok(patches
                    .par_iter()
                    .map(|pt| {
                        let s = self.tile_map(pt);
                        progress(1);
                        s
                    })
                    .collect())
            }
            // One image at a time: its tiles fill the batches and both cores, and memory
            // stays bounded by one image's tiles.
            Some(_) => images
                .iter()
                .map(|img| {
                    let s = self.score_tiled(img)?;
                    progress(1);
                    Ok(s)
                })
                .collect(),
        }
    }

    /// The anomaly map of one model input.
    fn tile_map(&self, pt: &embed::Patches) -> Scored {
        self.model.score_patches(pt)
    }

    fn score_tiled(&self, img: &DynamicImage) -> Result<Scored> {
        score_image(self.model.tiling, img, |crops| {
            let patches = extract_patches(&self.backbone, &self.model.preprocess, &crops, &|_| ())?;
            Ok(patches.par_iter().map(|pt| self.tile_map(pt)).collect())
        })
    }
}
