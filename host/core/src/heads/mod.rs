//! Scoring heads: embedded patches in, one score per patch out.
//!
//! [`patchcore`] and [`padim`] learn from good images only; [`classifier`] learns OK/NG
//! from labelled defects; [`combined`] adds an anomaly head and a classifier for lines
//! that have some defects but must also catch kinds never seen.

pub mod classifier;
pub mod combined;
pub mod padim;
pub mod patchcore;

use kensa_shared::package::HeadKind;
use serde::{Deserialize, Serialize};

use crate::embed;
pub use classifier::Classifier;
pub use combined::{Affine, Combined, mix};
pub use padim::Padim;
pub use patchcore::PatchCore;

/// The scoring head: embedded patches in, one score per patch out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Head {
    /// Nearest-neighbour distance to a coreset memory bank.
    PatchCore(PatchCore),
    /// Per-position Mahalanobis distance.
    Padim(Padim),
    /// A linear OK/NG classifier per patch, learnt from labelled defects.
    Supervised(Classifier),
    /// Both an anomaly head and a classifier (see [`Combined`]).
    Combined(Combined),
}

impl Head {
    /// Which head, as packages name it.
    pub fn kind(&self) -> HeadKind {
        match self {
            Head::PatchCore(_) => HeadKind::PatchCore,
            Head::Padim(_) => HeadKind::Padim,
            Head::Supervised(_) => HeadKind::Supervised,
            Head::Combined(c) => match *c.anomaly {
                Head::Padim(_) => HeadKind::CombinedPadim,
                _ => HeadKind::CombinedPatchCore,
            },
        }
    }

    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Patch-score grid of embedded patches.
    pub fn patch_scores(&self, p: &embed::Patches) -> Vec<f32> {
        match self {
            Head::PatchCore(pc) => pc.score(p, faer::Par::Seq),
            Head::Padim(pd) => pd.score(p),
            Head::Supervised(c) => c.score(p),
            Head::Combined(c) => {
                mix(&c.anomaly.patch_scores(p), &c.classifier.score(p), c.anomaly_scale, c.classifier_scale)
            }
        }
    }
}
