//! Kensa's ML core: everything from a folder of images to a model package for the box,
//! with no command line, progress bar or serial link (those live in the `kensa` binary).
//!
//! Modules follow the pipeline, each using only those before it in this list (checked by
//! `tests/tests/e2e/layering.rs`):
//! [`metrics`], [`evidence`] (what a threshold's scores can show), [`onnx`] → [`dataset`] → [`backbone`] (CNN features) → [`embed`] (patch
//! embeddings) → [`map`] (anomaly map, image score, defect boxes) → [`heads`] (patch
//! scores) → [`model`] (a trained model file) → [`score`] (scoring images as at training)
//! → [`train`] → [`eval`] → [`export`] (one ONNX graph + manifest, accuracy gate).
//! [`error`] and [`progress`] serve them all.

#![deny(missing_docs)]

pub mod backbone;
pub mod dataset;
pub mod embed;
pub mod error;
pub mod eval;
pub mod evidence;
pub mod export;
pub mod heads;
pub mod map;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod progress;
pub mod score;
pub mod train;

pub use error::{Error, Result};
pub use progress::Progress;
