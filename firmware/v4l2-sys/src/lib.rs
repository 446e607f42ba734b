//! Raw V4L2 (`linux/videodev2.h`) bindings for the `v4l` crate.
//!
//! The crates.io `v4l2-sys-mit` runs bindgen in its build script, which needs libclang
//! on every machine that builds the firmware. The kernel's userspace API is stable and
//! the product targets two architectures, so the bindings are generated once per
//! architecture and checked in. `tests/bindings.rs` regenerates them with the same
//! bindgen and fails when they differ (`tools/v4l2-bindings.sh` rewrites them).
#![allow(clippy::all)]
#![allow(deref_nullptr)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]

#[cfg(target_arch = "x86_64")]
include!("x86_64.rs");

#[cfg(target_arch = "aarch64")]
include!("aarch64.rs");

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("no pre-generated V4L2 bindings for this architecture: add it to tools/v4l2-bindings.sh");
