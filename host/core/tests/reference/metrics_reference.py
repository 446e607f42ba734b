"""Independent reference values for host/src/metrics.rs.

Regenerate with:  python3 host/tests/reference/metrics_reference.py > host/tests/reference/metrics.json
Needs numpy, scipy and scikit-learn. Image AUROC and F1 come from scikit-learn; AUPRO is
computed the way the MVTec AD evaluation does it: a threshold sweep that labels
8-connected ground-truth regions with scipy and averages per-region overlap.
"""
import json

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import precision_recall_curve, roc_auc_score

rng = np.random.default_rng(20261128)

# Image level: 60 good, 25 defective; overlapping score distributions with ties.
labels = np.r_[np.zeros(60, bool), np.ones(25, bool)]
scores = np.r_[rng.normal(0.0, 1.0, 60), rng.normal(1.2, 1.0, 25)]
scores = np.round(scores, 1).astype(np.float32)  # rounding creates ties
prec, rec, _ = precision_recall_curve(labels, scores)
f1 = np.max(np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0))

# Pixel level: 4 maps of 24x24, blobs of different sizes as ground truth.
maps, masks = [], []
for k in range(4):
    m = np.zeros((24, 24), bool)
    if k > 0:
        for _ in range(k):
            y, x = rng.integers(0, 20, 2)
            h, w = rng.integers(1, 6, 2)
            m[y : y + h, x : x + w] = True
    a = rng.normal(0.0, 1.0, (24, 24)) + 1.5 * m
    maps.append(np.round(a, 1).astype(np.float32))
    masks.append(m)
amaps, gts = np.stack(maps), np.stack(masks)
pixel_auroc = roc_auc_score(gts.ravel(), amaps.ravel())


def aupro(amaps, gts, limit=0.3):
    structure = np.ones((3, 3), int)
    regions = []
    for a, g in zip(amaps, gts):
        lab, n = label(g, structure)
        for i in range(1, n + 1):
            regions.append((a, lab == i))
    neg = ~gts
    fprs, pros = [0.0], [0.0]
    for t in np.sort(np.unique(amaps))[::-1]:
        fprs.append(float(((amaps >= t) & neg).sum() / neg.sum()))
        pros.append(float(np.mean([((a >= t) & r).sum() / r.sum() for a, r in regions])))
    fprs, pros = np.array(fprs), np.array(pros)
    # Integrate up to the limit, interpolating the crossing segment.
    keep = fprs <= limit
    x, y = list(fprs[keep]), list(pros[keep])
    j = int(np.argmax(fprs > limit)) if (fprs > limit).any() else None
    if j is not None and x[-1] < limit:
        x0, x1, y0, y1 = fprs[j - 1], fprs[j], pros[j - 1], pros[j]
        x.append(limit)
        y.append(y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.trapezoid(y, x) / limit)


print(
    json.dumps(
        {
            "image": {
                "scores": scores.tolist(),
                "labels": labels.tolist(),
                "auroc": float(roc_auc_score(labels, scores)),
                "f1_max": float(f1),
            },
            "pixel": {
                "width": 24,
                "height": 24,
                "maps": [m.ravel().tolist() for m in amaps],
                "masks": [g.ravel().tolist() for g in gts],
                "auroc": float(pixel_auroc),
                "aupro_0.3": aupro(amaps, gts),
            },
        }
    )
)
