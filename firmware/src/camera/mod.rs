//! Where frames come from, behind one trait: a V4L2 camera on the board, a folder of
//! images, or a generated conveyor for demonstrations and tests.
//!
//! A source hands out frames; it does not keep time. The line stamps each frame on its
//! clock and, for sources without a device clock (folder, synthetic), paces them at
//! [`FrameSource::interval_us`]. A triggered source knows when the part passed its
//! photo-eye ([`FrameSource::arrived_us`]): the pusher is timed from that edge, not from
//! the capture, which can take seconds when a camera is (re)opened.

mod v4l2;
pub mod yuv;

use std::path::{Path, PathBuf};

pub use v4l2::V4l2Source;

use image::DynamicImage;
use kensa_shared::synth::{SynthSpec, generate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number from the source, from 0.
    pub seq: u64,
    /// The pixels.
    pub image: DynamicImage,
    /// Known ground truth (generated parts only): `true` = carries a defect.
    pub truth: Option<bool>,
    /// Where the frame came from (file name, device), for logs.
    pub origin: String,
    /// Frames the device dropped just before this one (its buffers were full because
    /// inspection fell behind): parts that passed uninspected.
    pub dropped_before: u64,
}

/// Why no usable frame came.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The source has no more frames (a folder played once).
    #[error("{0}: no more frames")]
    End(String),
    /// A frame arrived but cannot be decoded: the part it shows is uninspected.
    #[error("frame {seq} from {origin} is corrupt: {reason}")]
    Corrupt {
        /// Frame number.
        seq: u64,
        /// File or device.
        origin: String,
        /// Decoder message.
        reason: String,
    },
    /// No part arrived (no trigger edge within the wait): nothing to inspect, ask again.
    #[error("no part triggered")]
    Idle,
    /// The device is gone or not answering (unplugged camera): retry with backoff.
    #[error("camera {device} lost: {reason}")]
    Lost {
        /// Device.
        device: String,
        /// Why.
        reason: String,
    },
}

/// A source of frames.
pub trait FrameSource {
    /// The next frame (blocking until the device delivers one, for cameras).
    fn next_frame(&mut self) -> Result<Frame, FrameError>;

    /// Frame period for sources the station must pace (µs); `None` when the device
    /// delivers at its own rate.
    fn interval_us(&self) -> Option<u64>;

    /// Human-readable description for logs.
    fn describe(&self) -> String;

    /// Drop frames the device captured before now (a camera's queued buffers), so the
    /// next frame shows what is in front of it at this moment. Used on a trigger edge.
    /// No default: a wrapper that forgot to pass it on made a triggered camera inspect
    /// the previous part's buffered frame and count the frames between triggers as
    /// dropped parts (found on a real V4L2 driver, docs/hardware-in-the-loop.md).
    fn flush(&mut self);

    /// When the part behind the last [`Self::next_frame`] (frame or error) passed its
    /// sensor, µs on the line's clock: the trigger edge. `None` when the part is in front
    /// of the camera at capture (free-running and paced sources). No default, for the
    /// reason [`Self::flush`] has none: a wrapper that dropped it timed the pusher from a
    /// capture that took 1.9 s to open an unplugged-and-back camera, and missed the part.
    fn arrived_us(&self) -> Option<u64>;

    /// Step past the part in front of the camera without capturing it (inspection is
    /// behind and it passes uninspected); its ground truth, when the source knows it.
    fn skip(&mut self) -> Option<bool> {
        self.next_frame().ok().and_then(|f| f.truth)
    }
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        (**self).next_frame()
    }

    fn interval_us(&self) -> Option<u64> {
        (**self).interval_us()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }

    fn flush(&mut self) {
        (**self).flush()
    }

    fn arrived_us(&self) -> Option<u64> {
        (**self).arrived_us()
    }

    fn skip(&mut self) -> Option<bool> {
        (**self).skip()
    }
}

fn interval(rate_hz: f64) -> u64 {
    (1e6 / rate_hz).round().max(1.0) as u64
}

/// Generated parts from the `kensa synth` generator; a seeded share carry debris.
#[derive(Debug)]
pub struct SyntheticConveyor {
    spec: SynthSpec,
    defect_rate: f64,
    rng: ChaCha8Rng,
    seed: u64,
    seq: u64,
    interval_us: u64,
    /// Lighting change per 1 000 parts (0.05: 5 % brighter; negative: darker).
    lighting_drift: f64,
}

impl SyntheticConveyor {
    /// Parts like `spec` at `rate_hz`, a `defect_rate` share defective, reproducible by `seed`.
    pub fn new(spec: SynthSpec, rate_hz: f64, defect_rate: f64, seed: u64) -> Self {
        Self {
            spec,
            defect_rate,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            seq: 0,
            interval_us: interval(rate_hz),
            lighting_drift: 0.0,
        }
    }

    /// The lamp ages: every 1 000 parts the scene gets `per_1000` brighter (a share of
    /// its brightness; negative: darker), the slow change a drift alarm is for.
    pub fn with_lighting_drift(self, per_1000: f64) -> Self {
        Self { lighting_drift: per_1000, ..self }
    }

    /// The lighting gain on part `seq`.
    fn gain(&self, seq: u64) -> f64 {
        (1.0 + self.lighting_drift * seq as f64 / 1_000.0).max(0.0)
    }
}

impl SyntheticConveyor {
    fn next_truth(&mut self) -> bool {
        self.rng.random_bool(self.defect_rate.clamp(0.0, 1.0))
    }
}

impl FrameSource for SyntheticConveyor {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let defective = self.next_truth();
        // Seeds far from `kensa synth`'s training seeds, so the line shows unseen parts.
        let part_seed = self.seed.wrapping_mul(1_000_003).wrapping_add(0x5EED_0000 + self.seq);
        let mut image = generate(&self.spec, part_seed, defective).image;
        let seq = self.seq;
        self.seq += 1;
        let gain = self.gain(seq);
        if gain != 1.0 {
            for p in image.pixels_mut() {
                p.0[0] = (f64::from(p.0[0]) * gain).round().clamp(0.0, 255.0) as u8;
            }
        }
        Ok(Frame {
            seq,
            image: DynamicImage::ImageLuma8(image),
            truth: Some(defective),
            origin: format!("synthetic part {seq}"),
            dropped_before: 0,
        })
    }

    fn interval_us(&self) -> Option<u64> {
        Some(self.interval_us)
    }

    /// The part's truth without drawing it: the same sequence as [`Self::next_frame`].
    fn skip(&mut self) -> Option<bool> {
        let defective = self.next_truth();
        self.seq += 1;
        Some(defective)
    }

    fn describe(&self) -> String {
        let drift = if self.lighting_drift == 0.0 {
            String::new()
        } else {
            format!(", lighting {:+.1} % per 1000 parts", 100.0 * self.lighting_drift)
        };
        format!(
            "synthetic conveyor ({}, {}x{}, {:.0} % defective{drift})",
            self.spec.surface.name(),
            self.spec.width,
            self.spec.height,
            100.0 * self.defect_rate
        )
    }

    /// Generated on request: nothing is ever queued.
    fn flush(&mut self) {}

    fn arrived_us(&self) -> Option<u64> {
        None
    }
}

/// Images from a folder, in name order, once or looped.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    looped: bool,
    seq: u64,
    interval_us: u64,
}

impl DirSource {
    /// The images (png, jpg, bmp, tif) in `dir`, played at `rate_hz`.
    pub fn new(dir: &Path, rate_hz: f64, looped: bool) -> std::io::Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp" | "tif" | "tiff")
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} holds no png/jpg/bmp/tif images", dir.display()),
            ));
        }
        Ok(Self { dir: dir.to_path_buf(), files, looped, seq: 0, interval_us: interval(rate_hz) })
    }
}

impl FrameSource for DirSource {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let n = self.files.len() as u64;
        if !self.looped && self.seq >= n {
            return Err(FrameError::End(self.dir.display().to_string()));
        }
        let path = &self.files[(self.seq % n) as usize];
        let seq = self.seq;
        self.seq += 1;
        let origin = path.display().to_string();
        let decoded = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| kensa_shared::decode::decode(&b).map_err(|e| e.to_string()));
        match decoded {
            Ok(image) => Ok(Frame { seq, image, truth: None, origin, dropped_before: 0 }),
            Err(reason) => Err(FrameError::Corrupt { seq, origin, reason }),
        }
    }

    fn interval_us(&self) -> Option<u64> {
        Some(self.interval_us)
    }

    fn describe(&self) -> String {
        format!("{} images from {}", self.files.len(), self.dir.display())
    }

    /// Read on request: nothing is ever queued.
    fn flush(&mut self) {}

    fn arrived_us(&self) -> Option<u64> {
        None
    }

    fn skip(&mut self) -> Option<bool> {
        self.seq += 1;
        None
    }
}

/// Cuts a region of interest `[x, y, w, h]` out of every frame of a source. A frame the
/// region does not fit is corrupt (its part uninspected), never silently rescaled.
#[derive(Debug)]
pub struct Roi<S> {
    inner: S,
    roi: Option<[u32; 4]>,
}

impl<S: FrameSource> Roi<S> {
    /// Wrap `inner`; `None` passes frames through whole.
    pub fn new(inner: S, roi: Option<[u32; 4]>) -> Self {
        Self { inner, roi }
    }
}

impl<S: FrameSource> FrameSource for Roi<S> {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let mut f = self.inner.next_frame()?;
        if let Some([x, y, w, h]) = self.roi {
            let (fw, fh) = (f.image.width(), f.image.height());
            if x.saturating_add(w) > fw || y.saturating_add(h) > fh {
                return Err(FrameError::Corrupt {
                    seq: f.seq,
                    origin: f.origin,
                    reason: format!(
                        "region of interest [{x}, {y}, {w}, {h}] reaches outside the {fw}x{fh} frame"
                    ),
                });
            }
            f.image = f.image.crop_imm(x, y, w, h);
        }
        Ok(f)
    }

    fn interval_us(&self) -> Option<u64> {
        self.inner.interval_us()
    }

    fn skip(&mut self) -> Option<bool> {
        self.inner.skip()
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn arrived_us(&self) -> Option<u64> {
        self.inner.arrived_us()
    }

    fn describe(&self) -> String {
        match self.roi {
            Some(r) => format!("{}, region {r:?}", self.inner.describe()),
            None => self.inner.describe(),
        }
    }
}

/// Hands a copy of the first frame, and of every `every`-th after it, to `samples` (a
/// thread keeping them for self-testing flashed models on what this camera really sees).
/// Never blocks: when the keeper is busy the copy is dropped.
#[derive(Debug)]
pub struct Sampled<S> {
    inner: S,
    samples: std::sync::mpsc::SyncSender<DynamicImage>,
    every: u64,
    seen: u64,
}

impl<S: FrameSource> Sampled<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, samples: std::sync::mpsc::SyncSender<DynamicImage>, every: u64) -> Self {
        Self { inner, samples, every: every.max(1), seen: 0 }
    }
}

impl<S: FrameSource> FrameSource for Sampled<S> {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let f = self.inner.next_frame()?;
        if self.seen.is_multiple_of(self.every) {
            let _ = self.samples.try_send(f.image.clone());
        }
        self.seen += 1;
        Ok(f)
    }

    fn interval_us(&self) -> Option<u64> {
        self.inner.interval_us()
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn arrived_us(&self) -> Option<u64> {
        self.inner.arrived_us()
    }

    fn skip(&mut self) -> Option<bool> {
        self.inner.skip()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Takes a frame only when a part arrives: each message on `edges` (the time of a
/// photo-eye edge on the line's clock, from `main`'s GPIO thread or a test) flushes the
/// camera's stale buffers and captures the next frame. With no edge within `wait`,
/// reports [`FrameError::Idle`] so the caller can check for shutdown.
#[derive(Debug)]
pub struct Triggered<S> {
    inner: S,
    edges: std::sync::mpsc::Receiver<u64>,
    wait: std::time::Duration,
    input: String,
    arrived_us: Option<u64>,
}

impl<S: FrameSource> Triggered<S> {
    /// Capture from `inner` on each edge received; `input` names the trigger in errors.
    pub fn new(
        inner: S,
        edges: std::sync::mpsc::Receiver<u64>,
        wait: std::time::Duration,
        input: String,
    ) -> Self {
        Self { inner, edges, wait, input, arrived_us: None }
    }
}

impl<S: FrameSource> FrameSource for Triggered<S> {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        use std::sync::mpsc::RecvTimeoutError;
        self.arrived_us = None;
        match self.edges.recv_timeout(self.wait) {
            Ok(at_us) => {
                self.arrived_us = Some(at_us);
                self.inner.flush();
                self.inner.next_frame()
            }
            Err(RecvTimeoutError::Timeout) => Err(FrameError::Idle),
            Err(RecvTimeoutError::Disconnected) => {
                Err(FrameError::Lost { device: self.input.clone(), reason: "trigger input stopped".into() })
            }
        }
    }

    fn interval_us(&self) -> Option<u64> {
        None
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn arrived_us(&self) -> Option<u64> {
        self.arrived_us
    }

    fn describe(&self) -> String {
        format!("{}, triggered by {}", self.inner.describe(), self.input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kensa_shared::synth::Surface;

    #[test]
    fn samples_are_the_first_frame_and_every_nth_after_it_and_never_block() {
        let spec = SynthSpec::square(Surface::Fabric, 32);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut s = Sampled::new(SyntheticConveyor::new(spec, 10.0, 0.3, 7), tx, 4);
        let first = s.next_frame().unwrap();
        assert_eq!(rx.try_recv().unwrap(), first.image);
        let frames: Vec<Frame> = (1..12).map(|_| s.next_frame().unwrap()).collect();
        // Frame 4 was handed over; frame 8 found the keeper busy and was dropped.
        assert_eq!(rx.try_recv().unwrap(), frames[3].image);
        assert!(rx.try_recv().is_err());
        assert_eq!(frames.last().unwrap().seq, 11, "every frame still reaches the line");
    }

    #[test]
    fn synthetic_conveyor_is_reproducible_and_mixes_defects() {
        let spec = SynthSpec::square(Surface::Fabric, 64);
        let run = || {
            let mut s = SyntheticConveyor::new(spec, 10.0, 0.3, 7);
            (0..40).map(|_| s.next_frame().unwrap()).collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_eq!(
            a.iter().map(|f| f.truth).collect::<Vec<_>>(),
            b.iter().map(|f| f.truth).collect::<Vec<_>>()
        );
        assert_eq!(a[5].image.as_bytes(), b[5].image.as_bytes());
        let ng = a.iter().filter(|f| f.truth == Some(true)).count();
        assert!((4..=20).contains(&ng), "{ng} of 40 defective at rate 0.3");
        assert_eq!(a[39].seq, 39);
        let mut skipping = SyntheticConveyor::new(spec, 10.0, 0.3, 7);
        let truths: Vec<_> = (0..40)
            .map(|i| if i % 3 == 0 { skipping.skip() } else { skipping.next_frame().unwrap().truth })
            .collect();
        assert_eq!(truths, a.iter().map(|f| f.truth).collect::<Vec<_>>(), "skipping keeps the sequence");
        let mut after_skip = SyntheticConveyor::new(spec, 10.0, 0.3, 7);
        after_skip.skip();
        assert_eq!(after_skip.next_frame().unwrap().image.as_bytes(), a[1].image.as_bytes());
        assert_eq!(SyntheticConveyor::new(spec, 4.0, 0.0, 0).interval_us(), Some(250_000));
    }

    #[test]
    fn lighting_drift_brightens_the_same_parts_slowly() {
        let spec = SynthSpec::square(Surface::Fabric, 64);
        let mean = |f: &Frame| f.image.as_bytes().iter().map(|&v| f64::from(v)).sum::<f64>() / 4096.0;
        let mut plain = SyntheticConveyor::new(spec, 10.0, 0.0, 3);
        let mut aging = SyntheticConveyor::new(spec, 10.0, 0.0, 3).with_lighting_drift(0.05);
        let first = (plain.next_frame().unwrap(), aging.next_frame().unwrap());
        assert_eq!(first.0.image.as_bytes(), first.1.image.as_bytes(), "no change on part 0");
        // Part 2 000: the same part, 10 % brighter.
        for _ in 1..2_000 {
            plain.skip();
            aging.skip();
        }
        let (p, a) = (plain.next_frame().unwrap(), aging.next_frame().unwrap());
        let ratio = mean(&a) / mean(&p);
        assert!((1.08..=1.101).contains(&ratio), "brightness ratio {ratio}");
        assert!(aging.describe().contains("lighting +5.0 % per 1000 parts"), "{}", aging.describe());
    }

    #[test]
    fn folder_plays_in_name_order_and_names_corrupt_files() {
        let d = tempfile::tempdir().unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([10])).save(d.path().join("b.png")).unwrap();
        // Industrial cameras often save BMP or TIFF: every listed format decodes.
        image::GrayImage::from_pixel(8, 8, image::Luma([30])).save(d.path().join("b2.bmp")).unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([40])).save(d.path().join("b3.tif")).unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([20])).save(d.path().join("a.png")).unwrap();
        std::fs::write(d.path().join("c.png"), b"not a png").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"ignored").unwrap();
        // A JPEG cut to a third: lenient decoding would fill the rest with grey.
        let textured =
            image::GrayImage::from_fn(128, 128, |x, y| image::Luma([((x * 7 + y * 13) % 251) as u8]));
        let mut jpg = std::io::Cursor::new(Vec::new());
        textured.write_to(&mut jpg, image::ImageFormat::Jpeg).unwrap();
        let jpg = jpg.into_inner();
        std::fs::write(d.path().join("d.jpg"), &jpg[..jpg.len() / 3]).unwrap();
        let mut s = DirSource::new(d.path(), 5.0, false).unwrap();
        assert_eq!(s.next_frame().unwrap().image.to_luma8().get_pixel(0, 0)[0], 20);
        assert_eq!(s.next_frame().unwrap().image.to_luma8().get_pixel(0, 0)[0], 10);
        assert_eq!(s.next_frame().unwrap().image.to_luma8().get_pixel(0, 0)[0], 30);
        assert_eq!(s.next_frame().unwrap().image.to_luma8().get_pixel(0, 0)[0], 40);
        let err = s.next_frame().unwrap_err();
        assert!(
            matches!(err, FrameError::Corrupt { seq: 4, .. }) && err.to_string().contains("c.png"),
            "{err}"
        );
        let err = s.next_frame().unwrap_err();
        assert!(
            matches!(err, FrameError::Corrupt { seq: 5, .. }) && err.to_string().contains("truncated"),
            "{err}"
        );
        assert!(matches!(s.next_frame(), Err(FrameError::End(_))));

        let mut looped = DirSource::new(d.path(), 5.0, true).unwrap();
        for _ in 0..6 {
            let _ = looped.next_frame();
        }
        let again = looped.next_frame().unwrap();
        assert_eq!(again.seq, 6);
        assert_eq!(again.image.to_luma8().get_pixel(0, 0)[0], 20, "looping restarts at the first file");
    }

    #[test]
    fn an_empty_folder_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let err = DirSource::new(d.path(), 5.0, true).unwrap_err();
        assert!(err.to_string().contains(&d.path().display().to_string()), "{err}");
    }

    #[test]
    fn region_of_interest_is_cut_or_the_frame_refused() {
        let spec = SynthSpec::square(Surface::Fabric, 64);
        let mut cut = Roi::new(SyntheticConveyor::new(spec, 10.0, 0.0, 1), Some([8, 16, 40, 20]));
        let whole = SyntheticConveyor::new(spec, 10.0, 0.0, 1).next_frame().unwrap();
        let f = cut.next_frame().unwrap();
        assert_eq!((f.image.width(), f.image.height()), (40, 20));
        assert_eq!(f.image.to_luma8().get_pixel(0, 0), whole.image.to_luma8().get_pixel(8, 16));
        let mut outside = Roi::new(SyntheticConveyor::new(spec, 10.0, 0.0, 1), Some([40, 0, 40, 10]));
        let err = outside.next_frame().unwrap_err().to_string();
        assert!(err.contains("frame 0") && err.contains("outside the 64x64 frame"), "{err}");
    }

    #[test]
    fn a_missing_camera_is_lost_by_name_and_retried() {
        let mut cam = V4l2Source::new(
            "/nonexistent/video9".into(),
            crate::config::PixelFormat::Yuyv,
            640,
            480,
            std::time::Duration::from_millis(100),
        );
        for _ in 0..2 {
            match cam.next_frame() {
                Err(FrameError::Lost { device, reason }) => {
                    assert_eq!(device, "/nonexistent/video9");
                    assert!(reason.contains("cannot open"), "{reason}");
                }
                other => panic!("expected a lost camera, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_triggered_source_captures_once_per_edge_and_idles_between() {
        let spec = SynthSpec::square(Surface::Fabric, 32);
        let (tx, rx) = std::sync::mpsc::channel();
        let wait = std::time::Duration::from_millis(20);
        let mut t =
            Triggered::new(SyntheticConveyor::new(spec, 1000.0, 0.0, 3), rx, wait, "photo-eye".into());
        assert_eq!(t.interval_us(), None, "the trigger, not a clock, paces parts");
        assert!(matches!(t.next_frame(), Err(FrameError::Idle)));
        tx.send(1_000).unwrap();
        tx.send(2_500).unwrap();
        assert_eq!(t.next_frame().unwrap().seq, 0);
        assert_eq!(t.arrived_us(), Some(1_000), "the part is timed from its edge");
        assert_eq!(t.next_frame().unwrap().seq, 1);
        assert_eq!(t.arrived_us(), Some(2_500));
        assert!(matches!(t.next_frame(), Err(FrameError::Idle)));
        assert_eq!(t.arrived_us(), None, "no edge, no part");
        drop(tx);
        let err = t.next_frame().unwrap_err().to_string();
        assert!(err.contains("photo-eye") && err.contains("stopped"), "{err}");
    }

    /// A camera with queued buffers: frame `n` is `n` flushes old.
    struct Buffered {
        flushes: u64,
    }

    impl FrameSource for Buffered {
        fn next_frame(&mut self) -> Result<Frame, FrameError> {
            let image = DynamicImage::new_luma8(8, 8);
            Ok(Frame { seq: self.flushes, image, truth: None, origin: "buffered".into(), dropped_before: 0 })
        }
        fn interval_us(&self) -> Option<u64> {
            None
        }
        fn describe(&self) -> String {
            "buffered camera".into()
        }
        fn flush(&mut self) {
            self.flushes += 1;
        }
        fn arrived_us(&self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn each_trigger_flushes_the_camera_through_every_wrapper() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (samples, _keep) = std::sync::mpsc::sync_channel(1);
        let camera = Sampled::new(Roi::new(Buffered { flushes: 0 }, Some([0, 0, 4, 4])), samples, 1);
        let wait = std::time::Duration::from_millis(20);
        let mut t = Triggered::new(Box::new(camera) as Box<dyn FrameSource>, rx, wait, "photo-eye".into());
        for n in 1..=3 {
            tx.send(n * 10).unwrap();
            assert_eq!(t.next_frame().unwrap().seq, n, "the frame after trigger {n} was not taken fresh");
            assert_eq!(t.arrived_us(), Some(n * 10));
        }
    }
}
