"""Offline ranking metrics in numpy: AUC (and its expectation over known probabilities), GAUC,
logloss, calibration, ECE, DeLong tests.

Labels of binary tasks are 0/1 arrays, scores are predicted probabilities. Everything is vectorized
(sorting and `np.bincount`), so a million rows with a hundred thousand users take well under a
second. A metric that is undefined on its input (AUC with one class, calibration with no
positives, anything on zero rows) is `nan`, never an exception.

`evaluate` computes, per model output: for a task with a `condition` (CVR) the metrics on rows
where the condition label is 1 (clicked rows); for a product (CTCVR) the metrics on all rows with
the label being the product of its tasks' labels (click * conversion). That rule is written once,
as data, in `Schema.scoring` (pure Python); `output_rows` and `output_labels` apply it in numpy
(so `mtrank compare` uses it without loading TensorFlow), and the training loss
(`ranker/tasks.py`) reads the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np

from ranker.schema import Schema

ECE_BINS = 10
LOGLOSS_EPSILON = 1e-7


# ---- binary metrics --------------------------------------------------------------------------


def auc(labels: Any, scores: Any, sample_weight: Any = None) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    The rank-based (Mann-Whitney) form with tied scores sharing their average rank, optionally
    weighting each row. `nan` when the labels hold only one class.
    """
    y, s = _binary(labels), _floats(scores)
    w = np.ones_like(s) if sample_weight is None else _floats(sample_weight)
    ordered, total_pos, total_neg = _ordered_pairs(s, w * y, w * (1.0 - y))
    if total_pos <= 0 or total_neg <= 0:
        return math.nan
    return ordered / (total_pos * total_neg)


def expected_auc(probabilities: Any, scores: Any) -> float:
    """The AUC of `scores` expected over labels drawn from known `probabilities` (a simulator's truth).

    Every ordered pair of distinct rows (i, j) counts with weight p_i * (1 - p_j), the chance that
    i is a positive and j a negative: the ratio of expected concordant pairs to expected pairs.
    With no label noise left, it tells two models apart where the AUC of one draw of ~150
    positives cannot; `expected_auc(p, s) / expected_auc(p, p)` is a score's share of the oracle.
    `nan` when every probability is 0, or every one is 1.
    """
    p, s = _floats(probabilities), _floats(scores)
    if len(p) != len(s):
        raise ValueError(f"{len(p)} probabilities but {len(s)} scores")
    if ((p < 0.0) | (p > 1.0) | np.isnan(p)).any():
        raise ValueError("probabilities must be in [0, 1]")
    ordered, total_pos, total_neg = _ordered_pairs(s, p, 1.0 - p)
    self_pairs = float(np.sum(p * (1.0 - p)))  # a row is never both the positive and the negative
    pairs = total_pos * total_neg - self_pairs
    if pairs <= 0.0:
        return math.nan
    return (ordered - 0.5 * self_pairs) / pairs  # a row's pair with itself counted as a tie


def _ordered_pairs(
    scores: np.ndarray, positive: np.ndarray, negative: np.ndarray
) -> tuple[float, float, float]:
    """Sum over (positive, negative) pairs of weight * [score_pos > score_neg] (ties 1/2), and the
    total positive and negative weight; each row weighs `positive[i]` as a positive, `negative[i]`
    as a negative."""
    order = np.argsort(scores, kind="mergesort")
    block = _blocks(scores[order])
    pos = np.bincount(block, weights=positive[order])
    neg = np.bincount(block, weights=negative[order])
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg))), float(pos.sum()), float(neg.sum())


def gauc(labels: Any, scores: Any, groups: Any) -> float:
    """Group AUC: the AUC of each group (user) averaged with the group's row count as weight.

    Groups whose rows hold one class only are skipped (their AUC is undefined); `nan` when every
    group is skipped. With one group it equals `auc`. (Zhu et al., "Optimized Cost per Click in
    Taobao Display Advertising", KDD 2017.)
    """
    y, s = _binary(labels), _floats(scores)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    codes = codes.ravel()
    order = np.lexsort((s, codes))
    y, s, codes = y[order], s[order], codes[order]
    new_block = np.ones(len(s), dtype=bool)
    new_block[1:] = (s[1:] != s[:-1]) | (codes[1:] != codes[:-1])
    block = np.cumsum(new_block) - 1
    pos = np.bincount(block, weights=y)
    neg = np.bincount(block, weights=1.0 - y)
    block_group = codes[new_block]
    below = np.cumsum(neg) - neg  # negatives below each block, over all groups so far
    first_block = np.searchsorted(block_group, block_group)  # groups are sorted: first block
    below -= below[first_block]
    pairs = np.bincount(block_group, weights=pos * (below + 0.5 * neg))
    group_pos, group_neg = (
        np.bincount(block_group, weights=pos),
        np.bincount(block_group, weights=neg),
    )
    valid = (group_pos > 0) & (group_neg > 0)
    if not valid.any():
        return math.nan
    group_auc = pairs[valid] / (group_pos[valid] * group_neg[valid])
    count = group_pos[valid] + group_neg[valid]
    return float(np.sum(group_auc * count) / np.sum(count))


def logloss(labels: Any, scores: Any, eps: float = LOGLOSS_EPSILON) -> float:
    """Mean binary cross-entropy, with scores clipped to [eps, 1 - eps]; `nan` on zero rows."""
    y, p = _binary(labels), np.clip(_floats(scores), eps, 1.0 - eps)
    if len(y) == 0:
        return math.nan
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def calibration(labels: Any, scores: Any) -> float:
    """Mean predicted / mean observed (1.0 is calibrated); `nan` when there are no positives."""
    y, p = _binary(labels), _floats(scores)
    if len(y) == 0 or y.sum() == 0:
        return math.nan
    return float(p.mean() / y.mean())


def expected_calibration_error(labels: Any, scores: Any, bins: int = ECE_BINS) -> float:
    """ECE over `bins` equal-frequency bins: sum over bins of share * |mean score - mean label|.

    Rows are sorted by score and cut into bins of (nearly) equal row counts, so low-rate logs
    (most scores near 0) still get `bins` populated bins; tied scores may straddle a cut.
    """
    y, p = _binary(labels), _floats(scores)
    n = len(y)
    if n == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    which = np.arange(n) * bins // n
    count = np.bincount(which, minlength=bins)
    gap = np.bincount(which, p[order], bins) - np.bincount(which, y[order], bins)
    return float(np.sum(np.abs(gap[count > 0])) / n)


# ---- DeLong ----------------------------------------------------------------------------------


def delong_test(labels: Any, scores_a: Any, scores_b: Any) -> tuple[float, float, float, float]:
    """Two-sided DeLong test that two correlated scorings of the same rows have equal AUC.

    Returns (auc_a, auc_b, z, p_value). Identical scorings give z = 0 and p = 1. (DeLong, DeLong
    and Clarke-Pearson, "Comparing the Areas under Two or More Correlated ROC Curves", Biometrics
    1988; the fast form of Sun and Xu, IEEE Signal Processing Letters 2014.)
    """
    aucs, cov = _delong(labels, np.vstack([_floats(scores_a), _floats(scores_b)]))
    var = cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if not math.isfinite(diff):
        return float(aucs[0]), float(aucs[1]), math.nan, math.nan
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    p_value = 2.0 * (1.0 - NormalDist().cdf(abs(z)))
    return float(aucs[0]), float(aucs[1]), float(z), float(p_value)


def auc_confidence_interval(
    labels: Any, scores: Any, level: float = 0.95
) -> tuple[float, float, float]:
    """(auc, low, high): a normal interval with DeLong's variance, clipped to [0, 1]."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    aucs, cov = _delong(labels, _floats(scores)[None, :])
    value = float(aucs[0])
    if not math.isfinite(value):
        return value, math.nan, math.nan
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * math.sqrt(max(cov[0, 0], 0.0))
    return value, max(0.0, value - half), min(1.0, value + half)


def _delong(labels: Any, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of each row of `scores` [k, n] and their DeLong covariance matrix [k, k]."""
    y = _binary(labels)
    positives, negatives = scores[:, y == 1], scores[:, y == 0]
    m, n = positives.shape[1], negatives.shape[1]
    k = scores.shape[0]
    if m == 0 or n == 0:
        return np.full(k, math.nan), np.full((k, k), math.nan)
    both = np.hstack([positives, negatives])
    tx, ty, tz = _midranks(positives), _midranks(negatives), _midranks(both)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v01 = (tz[:, :m] - tx) / n  # per positive: share of negatives ranked below it
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives ranked above it
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((k, k))
    sy = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((k, k))
    return aucs, sx / m + sy / n


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of each row of `values` [k, n], tied values sharing their average rank."""
    ranks = np.empty_like(values, dtype=np.float64)
    for i, row in enumerate(values):
        order = np.argsort(row, kind="mergesort")
        block = _blocks(row[order])
        counts = np.bincount(block)
        ends = np.cumsum(counts)
        ranks[i, order] = (ends - (counts - 1) / 2.0)[block]
    return ranks


# ---- regression --------------------------------------------------------------------------------


def rmse(labels: Any, predictions: Any) -> float:
    """Root mean squared error; `nan` on zero rows."""
    error = _floats(predictions) - _floats(labels)
    return float(np.sqrt(np.mean(error**2))) if len(error) else math.nan


def mae(labels: Any, predictions: Any) -> float:
    """Mean absolute error; `nan` on zero rows."""
    error = _floats(predictions) - _floats(labels)
    return float(np.mean(np.abs(error))) if len(error) else math.nan


# ---- per-output evaluation -------------------------------------------------------------------


def binary_metrics(labels: Any, scores: Any, groups: Any = None) -> dict[str, float]:
    """auc, gauc (grouped by `groups`; left out without groups), logloss, calibration, ece and
    count of one binary output."""
    result = {"auc": auc(labels, scores)}
    if groups is not None:
        result["gauc"] = gauc(labels, scores, groups)
    return {
        **result,
        "logloss": logloss(labels, scores),
        "calibration": calibration(labels, scores),
        "ece": expected_calibration_error(labels, scores),
        "count": float(len(_floats(labels))),
    }


def regression_metrics(labels: Any, predictions: Any) -> dict[str, float]:
    """rmse, mae and count of one regression output."""
    return {
        "rmse": rmse(labels, predictions),
        "mae": mae(labels, predictions),
        "count": float(len(_floats(labels))),
    }


def evaluate(
    schema: Schema,
    predictions: Mapping[str, Any],
    labels: Mapping[str, Any],
    user_ids: Any = None,
) -> dict[str, dict[str, float]]:
    """Metrics of every task and product: {output name: {metric: value}}.

    `predictions` is keyed by output name, `labels` by label column. A task with a condition is
    measured on rows where the condition label is 1; a product on all rows against the product
    of its tasks' labels (its prediction, if missing, is the product of theirs). GAUC groups by
    `user_ids`, and is left out when they are None (data without a user column). Regression tasks
    get rmse, mae and count. An auxiliary task is measured where `predictions` has it (the Keras
    model's; an export does not serve it).
    """
    users = None if user_ids is None else np.asarray(user_ids).ravel()
    truth, scored = output_labels(schema, labels), output_rows(schema, labels)
    results: dict[str, dict[str, float]] = {}
    for task in schema.tasks:
        if task.auxiliary and task.name not in predictions:  # an export does not serve it
            continue
        rows = scored[task.name]
        y, p = truth[task.name][rows], _floats(predictions[task.name])[rows]
        if task.type == "regression":
            results[task.name] = regression_metrics(y, p)
        else:
            results[task.name] = binary_metrics(y, p, None if users is None else users[rows])
    for product in schema.products:
        if product.name in predictions:
            p = _floats(predictions[product.name])
        else:
            p = np.prod([_floats(predictions[name]) for name in product.of], axis=0)
        results[product.name] = binary_metrics(truth[product.name], p, users)
    return results


# ---- which rows an output is scored on ---------------------------------------------------------


def scored_rows(count: int, condition: Any = None) -> np.ndarray:
    """The rows an output is scored on, as a boolean mask: where its condition label is 1 (a
    conditioned task: CVR on clicked rows), or all `count` rows when it has no condition."""
    if condition is None:
        return np.ones(count, dtype=bool)
    return _floats(condition) == 1.0


def output_rows(schema: Schema, labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per output (every task, then every product), the mask of the rows it is scored on
    (`Schema.scoring`: where its condition label is 1, else all rows). `labels` is keyed by
    label column."""
    rows = len(_floats(labels[schema.tasks[0].label]))
    return {
        name: scored_rows(rows, None if rule.condition is None else labels[rule.condition])
        for name, rule in schema.scoring().items()
    }


def output_labels(schema: Schema, labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per output, its labels over all rows (`Schema.scoring`): a task's label column; a
    product's, the product of its tasks' labels (ctcvr: click * conversion)."""
    return {
        name: np.prod([_floats(labels[column]) for column in rule.labels], axis=0)
        for name, rule in schema.scoring().items()
    }


# ---- helpers -----------------------------------------------------------------------------------


def _floats(values: Any) -> np.ndarray:
    """A flat float64 array ([n, 1] model outputs become [n])."""
    return np.asarray(values, dtype=np.float64).ravel()


def _binary(labels: Any) -> np.ndarray:
    """Labels as a flat float64 0/1 array; anything else is a ValueError showing the value."""
    y = _floats(labels)
    bad = (y != 0.0) & (y != 1.0)
    if bad.any():
        raise ValueError(f"binary labels must be 0 or 1, got {float(y[bad][0])!r}")
    return y


def _blocks(sorted_values: np.ndarray) -> np.ndarray:
    """For sorted values, the index of each value's run of equal values (0, 0, 1, 2, 2, ...)."""
    if len(sorted_values) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.ones(len(sorted_values), dtype=bool)
    starts[1:] = sorted_values[1:] != sorted_values[:-1]
    return np.cumsum(starts) - 1
