//! `kensa-fw`, the daemon on the edge box, as a library so tests can drive its core.
//!
//! Pure logic lives in modules with no I/O ([`schedule`], [`config`], [`settings`],
//! [`station`], [`link::answer`]); hardware and the
//! clock reach it through traits ([`actuator`] over `OutputPin`, [`clock::Clock`]), and
//! concrete Linux devices appear only in `main.rs`.

#![deny(missing_docs)]

pub mod actuator;
pub mod camera;
pub mod clock;
pub mod config;
pub mod line;
pub mod link;
pub mod logbook;
pub mod model;
pub mod permit;
pub mod samples;
pub mod schedule;
pub mod settings;
pub mod station;
pub mod store;
pub mod supervisor;
pub mod telemetry;
