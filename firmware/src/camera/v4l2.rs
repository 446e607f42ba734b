//! A V4L2 camera (`/dev/videoN`) through the `v4l` crate, memory-mapped buffers.
//!
//! The device is opened lazily and re-opened after any failure, so an unplugged camera
//! is a run of [`FrameError::Lost`] (the station backs off and applies the fail-safe
//! policy) rather than a dead daemon; plugging it back in resumes inspection.

use std::path::PathBuf;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::yuv::{mjpeg_to_rgb, yuyv_to_rgb};
use super::{Frame, FrameError, FrameSource};
use crate::config::PixelFormat;

/// Buffers queued in the driver: enough to ride out one slow inference.
const BUFFERS: u32 = 4;

/// `poll(2)`'s "data to read" event: a filled buffer is ready to dequeue.
const POLLIN: i16 = 0x0001;

/// A V4L2 capture device.
pub struct V4l2Source {
    path: PathBuf,
    format: PixelFormat,
    width: u32,
    height: u32,
    timeout: Duration,
    seq: u64,
    /// The driver's sequence number of the last frame, to spot dropped frames.
    last_sequence: Option<u32>,
    // Field order: the stream unmaps its buffers before the device closes.
    stream: Option<Stream<'static>>,
    device: Option<Device>,
    /// Where the device was configured, for errors (`camera.device in box.toml`).
    configured: Option<String>,
}

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source").field("path", &self.path).field("open", &self.stream.is_some()).finish()
    }
}

impl V4l2Source {
    /// A camera at `path` delivering `width`×`height` frames in `format`; a frame not
    /// delivered within `timeout` counts as a lost camera.
    pub fn new(path: PathBuf, format: PixelFormat, width: u32, height: u32, timeout: Duration) -> Self {
        Self {
            path,
            format,
            width,
            height,
            timeout,
            seq: 0,
            last_sequence: None,
            stream: None,
            device: None,
            configured: None,
        }
    }

    /// Name where the device was configured in every error, so a technician knows which
    /// setting to check (`camera.device in /etc/kensa/kensa-fw.toml`).
    pub fn configured_at(mut self, at: String) -> Self {
        self.configured = Some(at);
        self
    }

    /// Drop the stream and the device; the next frame opens them again.
    fn close(&mut self) {
        self.stream = None;
        self.device = None;
        self.last_sequence = None;
    }

    fn lost(&self, reason: String) -> FrameError {
        let device = match &self.configured {
            Some(at) => format!("{} ({at})", self.path.display()),
            None => self.path.display().to_string(),
        };
        FrameError::Lost { device, reason }
    }

    fn open(&mut self) -> Result<(), FrameError> {
        let dev = Device::with_path(&self.path).map_err(|e| self.lost(format!("cannot open: {e}")))?;
        let mut fmt = dev.format().map_err(|e| self.lost(format!("cannot read the format: {e}")))?;
        fmt.width = self.width;
        fmt.height = self.height;
        fmt.fourcc = FourCC::new(match self.format {
            PixelFormat::Mjpg => b"MJPG",
            PixelFormat::Yuyv => b"YUYV",
        });
        let got = dev.set_format(&fmt).map_err(|e| self.lost(format!("cannot set the format: {e}")))?;
        if got.width != self.width || got.height != self.height || got.fourcc != fmt.fourcc {
            // Not transient: retrying will not change what the camera can do.
            return Err(self.lost(format!(
                "asked for {}x{} {}, the camera offers {}x{} {}",
                self.width, self.height, fmt.fourcc, got.width, got.height, got.fourcc
            )));
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
            .map_err(|e| self.lost(format!("cannot map capture buffers: {e}")))?;
        stream.set_timeout(self.timeout);
        self.stream = Some(stream);
        self.device = Some(dev);
        Ok(())
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Frame, FrameError> {
        if self.stream.is_none() {
            self.open()?;
        }
        let stream = self.stream.as_mut().expect("opened above");
        let (raw, sequence) = match stream.next() {
            Ok((buf, meta)) => (buf[..(meta.bytesused as usize).min(buf.len())].to_vec(), meta.sequence),
            Err(e) => {
                self.close();
                return Err(self.lost(format!("capture failed: {e}")));
            }
        };
        let dropped_before =
            self.last_sequence.map_or(0, |last| u64::from(sequence.wrapping_sub(last).saturating_sub(1)));
        self.last_sequence = Some(sequence);
        let seq = self.seq;
        self.seq += 1;
        let origin = self.path.display().to_string();
        let image = match self.format {
            PixelFormat::Yuyv => {
                yuyv_to_rgb(&raw, self.width, self.height).map(image::DynamicImage::ImageRgb8)
            }
            PixelFormat::Mjpg => mjpeg_to_rgb(&raw),
        }
        .map_err(|e| FrameError::Corrupt { seq, origin: origin.clone(), reason: e.to_string() })?;
        Ok(Frame { seq, image, truth: None, origin, dropped_before })
    }

    fn interval_us(&self) -> Option<u64> {
        None
    }

    fn flush(&mut self) {
        // Take whatever the driver filled before now, while poll says a buffer is ready.
        // Never let `next` time out here: it re-queues the buffer it last handed out
        // before it dequeues, so after a failed dequeue the following call queues that
        // buffer a second time, which videobuf2 drivers refuse with EINVAL (vivid did;
        // a real camera would too, v4l2loopback does not).
        let Some(stream) = self.stream.as_mut() else { return };
        let handle = stream.handle();
        for _ in 0..=BUFFERS {
            match handle.poll(POLLIN, 0) {
                Ok(ready) if ready > 0 => {
                    if let Err(e) = stream.next() {
                        tracing::warn!("{}: flushing stale frames failed: {e}", self.path.display());
                        self.close();
                        return;
                    }
                }
                _ => break,
            }
        }
        // Frames discarded on purpose are not overruns.
        self.last_sequence = None;
    }

    /// Free-running: the part is what the sensor saw at capture.
    fn arrived_us(&self) -> Option<u64> {
        None
    }

    fn describe(&self) -> String {
        format!("V4L2 camera {} ({}x{} {:?})", self.path.display(), self.width, self.height, self.format)
    }
}
