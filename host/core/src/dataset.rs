//! Image datasets: the MVTec layout and plain OK/NG folders, with masks paired by name.
//!
//! Loading is two steps: [`Dataset`] lists files (cheap, validates layout), and
//! [`open_image`] / [`open_mask`] read one file with an error that names it. A folder
//! with unreadable images either fails on the first one or, with [`OnError::Skip`],
//! logs a warning per file and goes on.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, ensure};
use image::{DynamicImage, GrayImage};

/// Ground truth of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// A good part.
    Good,
    /// A defective part of the named type (`test/<type>` folder).
    Defect(String),
}

/// One image and its ground truth.
#[derive(Debug, Clone)]
pub struct Item {
    /// Image file.
    pub path: PathBuf,
    /// Ground truth.
    pub label: Label,
    /// Pixel mask file, if the defect has one.
    pub mask: Option<PathBuf>,
}

impl Item {
    /// True for defective parts.
    pub fn is_defect(&self) -> bool {
        self.label != Label::Good
    }

    /// Defect type, or `good`.
    pub fn kind(&self) -> &str {
        match &self.label {
            Label::Good => "good",
            Label::Defect(t) => t,
        }
    }

    /// File name without extension.
    pub fn stem(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// What to do with a file that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the file.
    #[default]
    Fail,
    /// Warn and leave the file out.
    Skip,
}

/// Training and test images.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Good images to learn from.
    pub train: Vec<Item>,
    /// Labelled test images.
    pub test: Vec<Item>,
    /// Defective images to learn from (only after [`Dataset::split_labelled`]).
    pub train_defects: Vec<Item>,
    /// Labelled images for early stopping and thresholds (only after the split).
    pub validation: Vec<Item>,
}

/// Of every five images of a kind (by name), how many go to training and validation
/// in [`Dataset::split_labelled`]; the rest are test images.
pub const SPLIT_OF_FIVE: (usize, usize) = (2, 1);

const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Image files directly in `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(Error::io("listing", dir))?;
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(Error::io("listing", dir))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if path.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io("listing", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// The mask for image `stem` in `dir`: `<stem>_mask.<ext>` or `<stem>.<ext>`, never by
/// position in a listing (folders of images and masks are often not in step).
fn find_mask(dir: &Path, stem: &str) -> Option<PathBuf> {
    for name in [format!("{stem}_mask"), stem.to_string()] {
        for ext in ["png", "bmp", "tif", "tiff", "jpg"] {
            let p = dir.join(format!("{name}.{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

impl Dataset {
    /// Read an MVTec-layout folder: `train/good`, `test/<type>`, `ground_truth/<type>`.
    pub fn mvtec(root: &Path) -> Result<Self> {
        let train_dir = root.join("train/good");
        ensure!(
            train_dir.is_dir(),
            Dataset,
            "{} is not an MVTec dataset: no train/good folder",
            root.display()
        );
        let train = list_images(&train_dir)?
            .into_iter()
            .map(|path| Item { path, label: Label::Good, mask: None })
            .collect::<Vec<_>>();
        ensure!(!train.is_empty(), Dataset, "{} has no images", train_dir.display());
        let mut test = Vec::new();
        let test_dir = root.join("test");
        if test_dir.is_dir() {
            for dir in subdirs(&test_dir)? {
                let kind = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let gt = root.join("ground_truth").join(&kind);
                for path in list_images(&dir)? {
                    let item = if kind == "good" {
                        Item { path, label: Label::Good, mask: None }
                    } else {
                        let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                        Item { mask: find_mask(&gt, &stem), path, label: Label::Defect(kind.clone()) }
                    };
                    test.push(item);
                }
            }
        }
        Ok(Self { train, test, ..Self::default() })
    }

    /// Plain folders: a folder of good images, defect folders (each one defect type) and
    /// an optional folder of masks named after the images. With `holdout_good > 0`, that
    /// share of the good images (every k-th by name) goes to the test set.
    pub fn folders(
        good: &Path,
        defects: &[PathBuf],
        masks: Option<&Path>,
        holdout_good: f64,
    ) -> Result<Self> {
        ensure!(
            (0.0..1.0).contains(&holdout_good),
            Invalid,
            "held-out share {holdout_good} must be in [0, 1)"
        );
        let goods = list_images(good)?;
        ensure!(!goods.is_empty(), Dataset, "{} has no images", good.display());
        let mut ds = Self::default();
        let every =
            if holdout_good > 0.0 { (1.0 / holdout_good).round().max(2.0) as usize } else { usize::MAX };
        for (i, path) in goods.into_iter().enumerate() {
            let item = Item { path, label: Label::Good, mask: None };
            if i % every == every - 1 { ds.test.push(item) } else { ds.train.push(item) }
        }
        for dir in defects {
            let kind = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for path in list_images(dir)? {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                let mask = masks.and_then(|m| find_mask(m, &stem));
                ds.test.push(Item { path, label: Label::Defect(kind.clone()), mask });
            }
        }
        Ok(ds)
    }

    /// Learn from some defects: of each defect type's test images, in name order, 2 of
    /// every 5 move to training and 1 to validation; of the good test images, 1 of every
    /// 5 moves to validation. The other test images stay the held-out test set, the same
    /// for every kind of model trained on this split. Idempotent.
    pub fn split_labelled(&mut self) {
        if !self.train_defects.is_empty() || !self.validation.is_empty() {
            return;
        }
        let (train, val) = SPLIT_OF_FIVE;
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        let mut test = Vec::new();
        for item in std::mem::take(&mut self.test) {
            let i = seen.entry(item.kind().to_string()).or_default();
            let slot = *i % 5;
            *i += 1;
            if item.is_defect() && slot < train {
                self.train_defects.push(item);
            } else if (train..train + val).contains(&slot) {
                self.validation.push(item);
            } else {
                test.push(item);
            }
        }
        self.test = test;
    }

    /// Test images that are good.
    pub fn test_good(&self) -> impl Iterator<Item = &Item> {
        self.test.iter().filter(|i| !i.is_defect())
    }
}

/// Decode a whole image file ([`kensa_shared::decode`]); the error names the file and
/// what is wrong with it.
pub fn open_image(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(Error::io("reading image", path))?;
    kensa_shared::decode::decode(&bytes).map_err(|reason| Error::Image { path: path.to_path_buf(), reason })
}

/// Read a mask as a binary image (any non-zero pixel is defect) and check it matches the
/// image it belongs to.
pub fn open_mask(path: &Path, width: u32, height: u32) -> Result<GrayImage> {
    let mut m = open_image(path)?.to_luma8();
    ensure!(
        m.dimensions() == (width, height),
        Dataset,
        "mask {} is {}x{} but its image is {width}x{height}",
        path.display(),
        m.width(),
        m.height()
    );
    for p in m.pixels_mut() {
        p[0] = if p[0] >= 128 { 255 } else { 0 };
    }
    Ok(m)
}

/// Open every item's image, applying `on_error`; returns the items kept with their images.
pub fn open_all(items: &[Item], on_error: OnError) -> Result<Vec<(Item, DynamicImage)>> {
    use rayon::prelude::*;
    let loaded: Vec<(Item, Result<DynamicImage>)> =
        items.par_iter().map(|it| (it.clone(), open_image(&it.path))).collect();
    let mut out = Vec::with_capacity(loaded.len());
    for (item, img) in loaded {
        match (img, on_error) {
            (Ok(img), _) => out.push((item, img)),
            (Err(e), OnError::Fail) => return Err(e),
            (Err(e), OnError::Skip) => tracing::warn!("skipping: {e:#}"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        GrayImage::new(w, h).save(path).unwrap();
    }

    #[test]
    fn mvtec_pairs_masks_by_name_not_order() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write_png(&r.join("train/good/a.png"), 8, 8);
        write_png(&r.join("test/good/g.png"), 8, 8);
        write_png(&r.join("test/crack/b.png"), 8, 8);
        write_png(&r.join("test/crack/a.png"), 8, 8);
        write_png(&r.join("test/crack/nomask.png"), 8, 8);
        // Masks listed in a different order from the images, one with the source naming.
        write_png(&r.join("ground_truth/crack/b_mask.png"), 8, 8);
        write_png(&r.join("ground_truth/crack/a.png"), 8, 8);
        let ds = Dataset::mvtec(r).unwrap();
        assert_eq!(ds.train.len(), 1);
        let by_stem = |s: &str| ds.test.iter().find(|i| i.stem() == s).unwrap();
        assert_eq!(by_stem("a").mask.as_deref(), Some(r.join("ground_truth/crack/a.png").as_path()));
        assert_eq!(by_stem("b").mask.as_deref(), Some(r.join("ground_truth/crack/b_mask.png").as_path()));
        assert_eq!(by_stem("nomask").mask, None);
        assert_eq!(by_stem("a").kind(), "crack");
        assert_eq!(ds.test_good().count(), 1);
    }

    #[test]
    fn not_an_mvtec_folder_says_why() {
        let d = tempfile::tempdir().unwrap();
        let err = Dataset::mvtec(d.path()).unwrap_err().to_string();
        assert!(err.contains("train/good"), "{err}");
    }

    #[test]
    fn corrupt_image_error_names_the_file_and_skip_mode_continues() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
        let good = d.path().join("good.png");
        write_png(&good, 4, 4);
        let err = format!("{:#}", open_image(&bad).unwrap_err());
        assert!(err.contains("bad.png"), "{err}");
        let items: Vec<Item> = [&bad, &good]
            .iter()
            .map(|p| Item { path: p.to_path_buf(), label: Label::Good, mask: None })
            .collect();
        assert!(open_all(&items, OnError::Fail).is_err());
        let kept = open_all(&items, OnError::Skip).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0.path, good);
    }

    #[test]
    fn every_listed_image_format_decodes() {
        let d = tempfile::tempdir().unwrap();
        for (i, ext) in IMAGE_EXTENSIONS.iter().enumerate() {
            let img = image::GrayImage::from_pixel(6, 4, image::Luma([10 * i as u8 + 10]));
            img.save(d.path().join(format!("{i}.{ext}"))).unwrap();
        }
        let files = list_images(d.path()).unwrap();
        assert_eq!(files.len(), IMAGE_EXTENSIONS.len());
        for (i, f) in files.iter().enumerate() {
            let img = open_image(f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            assert_eq!((img.width(), img.height()), (6, 4), "{}", f.display());
            if !f.extension().is_some_and(|e| e == "jpg" || e == "jpeg") {
                assert_eq!(
                    img.to_luma8().get_pixel(0, 0)[0],
                    10 * i as u8 + 10,
                    "{} (lossless)",
                    f.display()
                );
            }
        }
    }

    #[test]
    fn mask_of_wrong_size_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m.png");
        write_png(&m, 4, 4);
        let err = open_mask(&m, 8, 4).unwrap_err().to_string();
        assert!(err.contains("m.png") && err.contains("8x4"), "{err}");
    }

    #[test]
    fn folder_layout_holds_out_good_images() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..10 {
            write_png(&d.path().join(format!("ok/{i}.png")), 4, 4);
        }
        write_png(&d.path().join("ng/x.png"), 4, 4);
        write_png(&d.path().join("masks/x_mask.png"), 4, 4);
        let ds = Dataset::folders(
            &d.path().join("ok"),
            &[d.path().join("ng")],
            Some(&d.path().join("masks")),
            0.2,
        )
        .unwrap();
        assert_eq!(ds.train.len(), 8);
        assert_eq!(ds.test_good().count(), 2);
        let ng: Vec<_> = ds.test.iter().filter(|i| i.is_defect()).collect();
        assert_eq!(ng.len(), 1);
        assert!(ng[0].mask.is_some());
        assert_eq!(ng[0].kind(), "ng");
    }

    #[test]
    fn labelled_split_is_two_one_two_per_kind_by_name_and_idempotent() {
        let item = |kind: &str, i: usize| Item {
            path: format!("{kind}/{i:02}.png").into(),
            label: if kind == "good" { Label::Good } else { Label::Defect(kind.into()) },
            mask: None,
        };
        let mut ds = Dataset::default();
        ds.test.extend((0..10).map(|i| item("crack", i)));
        ds.test.extend((0..5).map(|i| item("good", i)));
        ds.test.extend((0..3).map(|i| item("hole", i)));
        ds.split_labelled();
        let stems = |v: &[Item]| v.iter().map(|i| format!("{}/{}", i.kind(), i.stem())).collect::<Vec<_>>();
        assert_eq!(
            stems(&ds.train_defects),
            ["crack/00", "crack/01", "crack/05", "crack/06", "hole/00", "hole/01"]
        );
        assert_eq!(stems(&ds.validation), ["crack/02", "crack/07", "good/02", "hole/02"]);
        assert_eq!(
            stems(&ds.test),
            ["crack/03", "crack/04", "crack/08", "crack/09", "good/00", "good/01", "good/03", "good/04"]
        );
        let before = (ds.train_defects.len(), ds.validation.len(), ds.test.len());
        ds.split_labelled();
        assert_eq!((ds.train_defects.len(), ds.validation.len(), ds.test.len()), before);
    }
}
