//! The engineer's side of Kensa as a library; `main.rs` only parses and dispatches.
//!
//! Modules are named after the pipeline: [`dataset`] → [`backbone`] (features) → models →
//! metrics and reports; [`onnx`] writes graphs; [`synth`] writes generated datasets.

pub mod anomaly;
pub mod backbone;
pub mod cli;
pub mod dataset;
pub mod draw;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod report;
pub mod synth;
pub mod train;
