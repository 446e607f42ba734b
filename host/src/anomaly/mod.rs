//! Anomaly models learned from good images only.
//!
//! [`embed`] turns backbone feature maps into patch embeddings; [`patchcore`] and
//! [`padim`] turn patch embeddings into a grid of patch scores; [`map`] turns that grid
//! into a full-resolution anomaly map and an image score.

pub mod embed;
pub mod map;
pub mod padim;
pub mod patchcore;
