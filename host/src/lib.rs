//! The engineer's side of Kensa as a library; `main.rs` only parses and dispatches.
//!
//! Modules are named after the pipeline: [`dataset`] → [`backbone`] (features) → models →
//! metrics and reports; [`onnx`] writes graphs; [`synth`] writes generated datasets.

#![deny(missing_docs)]

/// `println!` that returns the I/O error instead of panicking, so that `kensa … | head`
/// ends quietly when the reader goes away (`main` treats a broken pipe as success).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

pub mod anomaly;
pub mod backbone;
pub mod bench;
pub mod cli;
pub mod dataset;
pub mod diag;
pub mod draw;
pub mod eval;
pub mod export;
pub mod link;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod predict;
pub mod report;
pub mod supervised;
pub mod synth;
pub mod train;
