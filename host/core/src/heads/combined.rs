//! An anomaly head and a classifier added in units of good parts' spread.

use serde::{Deserialize, Serialize};

use super::{Classifier, Head};

/// The combined patch scores: `anomaly` and `classifier` grids through their (weighted)
/// standardising maps, added.
pub fn mix(anomaly: &[f32], classifier: &[f32], a: Affine, c: Affine) -> Vec<f32> {
    anomaly.iter().zip(classifier).map(|(&x, &y)| a.apply(x) + c.apply(y)).collect()
}

/// `value · scale + offset`: puts a head's scores in units of good parts' spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    /// Multiplier (> 0, so the order of scores is kept).
    pub scale: f32,
    /// Added after scaling.
    pub offset: f32,
}

impl Affine {
    /// The map taking `mean` to 0 and `mean + std` to 1.
    pub fn standardising(mean: f32, std: f32) -> Self {
        let scale = 1.0 / std.max(1e-6);
        Self { scale, offset: -mean * scale }
    }

    /// This map followed by multiplying with `k`.
    pub fn times(self, k: f32) -> Self {
        Self { scale: self.scale * k, offset: self.offset * k }
    }

    /// Apply to one value.
    pub fn apply(&self, v: f32) -> f32 {
        v * self.scale + self.offset
    }
}

/// Anomaly head and classifier together, for lines that have some labelled defects but
/// must also catch kinds never seen. Rule: each head's patch scores are standardised on
/// good validation images (0 = their mean image score, 1 = one standard deviation
/// above), and a patch scores `w · anomaly + (1 − w) · classifier`, with `w` the value
/// in 0, 0.1, …, 1 that ranks the validation images best (image AUROC; ties go to the
/// value nearest 0.5). `w` = 1 or 0 is one head alone, so on validation images the
/// combination is never worse than the better head. Resizing, blur and pooling are
/// linear with unit gain, so the standardisation carries over to image scores.
/// The weights are folded into the two affine maps, which then simply add.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Combined {
    /// PatchCore or PaDiM.
    pub anomaly: Box<Head>,
    /// The OK/NG head.
    pub classifier: Classifier,
    /// Standardises anomaly scores, times `anomaly_weight`.
    pub anomaly_scale: Affine,
    /// Standardises classifier scores, times `1 − anomaly_weight`.
    pub classifier_scale: Affine,
    /// `w`: the anomaly head's share.
    pub anomaly_weight: f32,
}
