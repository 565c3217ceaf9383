"""ROC and reliability curves of one output's scores, as the report stores and the plots draw them."""

from __future__ import annotations

from typing import Any

import numpy as np

ROC_POINTS = 400
CALIBRATION_BINS = 10


def roc_curve(labels: np.ndarray, scores: np.ndarray, points: int = ROC_POINTS) -> dict[str, Any]:
    """False and true positive rates at up to `points` thresholds (tied scores stay together)."""
    order = np.argsort(-scores, kind="mergesort")
    y, s = labels[order], scores[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp, fp = np.cumsum(y)[last_of_tie], np.cumsum(1.0 - y)[last_of_tie]
    if tp[-1] <= 0 or fp[-1] <= 0:
        return {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}
    keep = np.unique(np.linspace(0, len(tp) - 1, min(points, len(tp))).astype(int))
    fpr = np.r_[0.0, fp[keep] / fp[-1]]
    tpr = np.r_[0.0, tp[keep] / tp[-1]]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def reliability(
    labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, list[float]]:
    """Mean score and observed rate in `bins` equal-frequency bins of the score (a reliability curve)."""
    n = len(labels)
    if n == 0:
        return {"predicted": [], "observed": [], "count": []}
    order = np.argsort(scores, kind="mergesort")
    which = np.arange(n) * bins // n
    count = np.bincount(which, minlength=bins)
    keep = count > 0
    predicted = np.bincount(which, scores[order], bins)[keep] / count[keep]
    observed = np.bincount(which, labels[order], bins)[keep] / count[keep]
    return {
        "predicted": [float(v) for v in predicted],
        "observed": [float(v) for v in observed],
        "count": [int(v) for v in count[keep]],
    }
