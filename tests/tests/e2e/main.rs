//! End-to-end tests: one binary, one module per area, each running the real executables.

mod anomaly;
mod backbone;
mod decisions;
mod diag;
mod fail_safe;
mod firmware;
mod hil;
mod layering;
mod synth;
mod telemetry;
mod update;
