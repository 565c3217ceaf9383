"""Score calibration fitted on the validation split after training, and applied inside the export.

Per served binary task, a calibrator maps the model's score p to a probability, fitted on DIR/val
(a task with a `condition`, cvr, on the rows where its condition label is 1, where its label is
observed):

    isotonic      pool-adjacent-violators blocks, served as the piecewise-linear function through
                  the blocks' (mean score, observed rate), anchored at (0, 0) and (1, 1)
                  (Zadrozny and Elkan, "Transforming Classifier Scores into Accurate Multiclass
                  Probability Estimates", KDD 2002); each block's rate smoothed by `prior_rows`
                  pseudo-rows at its mean score (`fit_isotonic`)
    platt         sigmoid(a * logit(p) + b), a and b fitted by logloss (Platt, "Probabilistic
                  Outputs for Support Vector Machines", Advances in Large Margin Classifiers 1999)
    temperature   sigmoid(logit(p) / T), T fitted by logloss (Guo et al., "On Calibration of
                  Modern Neural Networks", ICML 2017)
    none          p

A task with fewer than `min_positives` positives or negatives on its validation rows keeps its
scores (`none`, with the reason), and so does one whose fit would erase or reverse the order of
its scores (a constant isotonic fit, a Platt or temperature slope <= 0): a calibrator changes
what the scores mean, never how they rank (the isotonic map rises strictly between its anchors,
unless a tail block's rate is exactly 0 or 1). Before its calibrator, the root task (ctr) is corrected for
negatives kept with probability R in train.parquet (`training.negative_sampling`). Products are
recomputed from their tasks' calibrated scores, so ctcvr == ctr * cvr still holds in the export.

What is fitted is an `ExportCalibration` (`ranker.contract`), written to metadata.json; the
export's traced function (`export_outputs`) is built from exactly that description, its knots and
parameters as float32 constants, so it loads with plain TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ranker.contract import (
    CalibrationCheck,
    CalibrationStats,
    ExportCalibration,
    TaskCalibration,
    raw_output,
)
from ranker.keras_compat import tf
from ranker.schema import Schema, Task
from training import metrics
from training.config import CalibrationConfig, TrainConfig
from training.evaluation import ScoreFn
from training.negative_sampling import correct_negative_sampling, root_task

# scores are clipped to [EPSILON, 1 - EPSILON] before their logit (platt, temperature)
EPSILON = 1e-7
NEWTON_STEPS = 100


# ---- fitting (numpy) ---------------------------------------------------------------------------


def pool_adjacent_violators(
    scores: Any, labels: Any, weights: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotonic regression of labels on scores as blocks: (mean score, mean label, weight) each.

    Rows (of weight 1 unless `weights` says) with the same score form one block to start with;
    then, in score order, a block whose rate is not above the previous block's is merged into it,
    until the rates strictly increase (Ayer et al., "An Empirical Distribution Function for
    Sampling with Incomplete Information", Annals of Mathematical Statistics 1955).
    """
    s, y = np.asarray(scores, np.float64).ravel(), np.asarray(labels, np.float64).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, np.float64).ravel()
    values, inverse = np.unique(s, return_inverse=True)
    counts = np.bincount(inverse, weights=w)
    positives = np.bincount(inverse, weights=y * w)
    score_sum: list[float] = []
    label_sum: list[float] = []
    rows: list[float] = []
    for value, positive, count in zip(values * counts, positives, counts, strict=True):
        score_sum.append(value)
        label_sum.append(positive)
        rows.append(count)
        while len(rows) > 1 and label_sum[-2] * rows[-1] >= label_sum[-1] * rows[-2]:
            last = score_sum.pop(), label_sum.pop(), rows.pop()
            score_sum[-1] += last[0]
            label_sum[-1] += last[1]
            rows[-1] += last[2]
    n = np.array(rows)
    return np.array(score_sum) / n, np.array(label_sum) / n, n


def fit_isotonic(scores: Any, labels: Any, prior_rows: float = 0.0) -> TaskCalibration:
    """Knots through the PAV blocks, as float32 values (what the export computes with).

    With `prior_rows` m > 0, a block's rate is the m-estimate (positives + m * its mean score) /
    (rows + m) (Cestnik, "Estimating Probabilities: A Crucial Task in Machine Learning", ECAI
    1990, as Zadrozny and Elkan smooth calibration bins, ICML 2001): a block of a few rows, at
    the tails, keeps near the model's own score instead of a rate of 0 or 1; blocks the smoothing
    put out of order are pooled again. Blocks whose mean scores round to the same float32 are
    merged, weighted by their rows.
    """
    x, y, n = pool_adjacent_violators(scores, labels)
    if prior_rows > 0:
        smoothed = (y * n + prior_rows * x) / (n + prior_rows)
        x, y, n = pool_adjacent_violators(x, smoothed, n + prior_rows)
    x32 = x.astype(np.float32)
    _, first = np.unique(x32, return_index=True)
    group = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(x32))))
    rate = np.bincount(group, weights=y * n) / np.bincount(group, weights=n)
    knots_x = [float(v) for v in x32[first]]
    knots_y = [float(v) for v in rate.astype(np.float32)]
    if len(knots_x) < 2:
        return _unchanged("the rate does not rise with the score (the isotonic fit is constant)")
    # anchors: a score of 0 stays 0 and 1 stays 1, so the scores beyond the outer blocks (the
    # best candidates, above the top block's mean) keep their order instead of tying
    if knots_x[0] > 0.0 and knots_y[0] > 0.0:
        knots_x, knots_y = [0.0, *knots_x], [0.0, *knots_y]
    if knots_x[-1] < 1.0 and knots_y[-1] < 1.0:
        knots_x, knots_y = [*knots_x, 1.0], [*knots_y, 1.0]
    return TaskCalibration(method="isotonic", knots=len(knots_x), x=knots_x, y=knots_y)


def fit_platt(scores: Any, labels: Any) -> TaskCalibration:
    """a and b of sigmoid(a * logit(p) + b) of least logloss; a <= 0 would reverse or erase the
    scores' order, so such scores stay as they are."""
    a, b = _logistic(_logit(scores), labels, bias=True)
    if a <= 0:
        return _unchanged(f"the rate does not rise with the score (Platt slope {a:.3g})")
    return TaskCalibration(method="platt", a=a, b=b)


def fit_temperature(scores: Any, labels: Any) -> TaskCalibration:
    """T = 1 / a for the a of sigmoid(a * logit(p)) of least logloss; scores whose rate does not
    rise with them (a <= 0) have no temperature and stay as they are."""
    a, _ = _logistic(_logit(scores), labels, bias=False)
    if a <= 0:
        return _unchanged(f"the rate does not rise with the score (temperature slope {a:.3g})")
    return TaskCalibration(method="temperature", temperature=1.0 / a)


def _unchanged(reason: str) -> TaskCalibration:
    """No calibrator: one that erased or reversed the scores' order would erase the ranking."""
    return TaskCalibration(method="none", reason=reason)


def fit_method(method: str, config: CalibrationConfig, scores: Any, labels: Any) -> TaskCalibration:
    """The calibrator `method` fitted to (scores, labels) with the config's settings."""
    if method == "isotonic":
        return fit_isotonic(scores, labels, config.prior_rows)
    return FITTERS[method](scores, labels)


def fit_none(scores: Any, labels: Any) -> TaskCalibration:
    return TaskCalibration(method="none")


FITTERS: dict[str, Callable[[Any, Any], TaskCalibration]] = {
    "isotonic": fit_isotonic,
    "platt": fit_platt,
    "temperature": fit_temperature,
    "none": fit_none,
}


def _logistic(z: np.ndarray, labels: Any, bias: bool) -> tuple[float, float]:
    """(a, b) minimizing the logloss of sigmoid(a * z + b) (b = 0 without `bias`), by Newton's
    method from (1, 0) with step halving; convex, so it ends at the minimum."""
    y = np.asarray(labels, np.float64).ravel()
    design = np.stack([z, np.ones_like(z)], axis=1) if bias else z[:, None]
    w = np.zeros(design.shape[1])
    w[0] = 1.0

    def loss(w: np.ndarray) -> float:
        t = design @ w
        return float(np.mean(np.logaddexp(0.0, t) - y * t))

    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) / len(y)
        hessian = (design.T * (p * (1.0 - p))) @ design / len(y)
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(w)), gradient)
        size, before = 1.0, loss(w)
        while loss(w - size * step) > before and size > 1e-8:
            size /= 2.0
        w = w - size * step
        if np.max(np.abs(size * step)) < 1e-10:
            break
    return float(w[0]), float(w[1]) if bias else 0.0


def _logit(scores: Any) -> np.ndarray:
    p = np.clip(np.asarray(scores, np.float64).ravel(), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def served_binary(schema: Schema) -> list[Task]:
    """The tasks that get a calibrator: binary, served (not auxiliary)."""
    return [t for t in schema.tasks if t.type == "binary" and not t.auxiliary]


def fit(
    schema: Schema,
    config: TrainConfig,
    scores: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
) -> ExportCalibration:
    """Each served binary task's calibrator, fitted on its rows of the validation `scores` (the
    model's, keyed by output) and `labels` (keyed by label column); products as `product`."""
    rate, method = config.negative_sampling_rate, config.calibration.method
    root = root_task(schema) if rate < 1.0 else None
    rows, truth = metrics.output_rows(schema, labels), metrics.output_labels(schema, labels)
    tasks: dict[str, TaskCalibration] = {}
    for task in served_binary(schema):
        p = np.asarray(scores[task.name], np.float64).ravel()[rows[task.name]]
        y = truth[task.name][rows[task.name]]
        corrected = root is not None and task.name == root.name
        if corrected:
            p = correct_negative_sampling(p, rate)
        positives, negatives = int(y.sum()), int(len(y) - y.sum())
        reason = None
        if method != "none" and min(positives, negatives) < config.calibration.min_positives:
            reason = (
                f"{positives} positives and {negatives} negatives on the validation rows, fewer "
                f"than calibration.min_positives {config.calibration.min_positives}"
            )
        fitted = fit_method("none" if reason else method, config.calibration, p, y)
        facts = {"corrected": corrected, "rows": len(y), "positives": positives}
        tasks[task.name] = fitted.model_copy(update=facts | ({"reason": reason} if reason else {}))
    for product in schema.products:
        tasks[product.name] = TaskCalibration(method="product", of=list(product.of))
    return ExportCalibration(method=method, negative_sampling_rate=rate, tasks=tasks)


def checked(
    calibration: ExportCalibration, split: str, results: Mapping[str, Mapping[str, Any]]
) -> ExportCalibration:
    """`calibration` with each output's figures on `split` ("val" or "test"): `results` are the
    exported scores' metrics, with the raw scores' under "raw" (`training.evaluation`)."""
    tasks = {
        name: entry.model_copy(
            update={
                split: CalibrationCheck(
                    before=_stats(results[name]["raw"]), after=_stats(results[name])
                )
            }
        )
        for name, entry in calibration.tasks.items()
    }
    return calibration.model_copy(update={"tasks": tasks})


def _stats(values: Mapping[str, Any]) -> CalibrationStats:
    def finite(key: str) -> float | None:
        value = float(values[key])
        return value if np.isfinite(value) else None

    return CalibrationStats(ece=finite("ece"), calibration=finite("calibration"), auc=finite("auc"))


def describe(calibration: ExportCalibration) -> dict[str, str]:
    """Per output, a line for stderr: its calibrator and validation ECE before -> after."""
    lines = {}
    for name, entry in calibration.tasks.items():
        what = entry.method + (f" ({entry.knots} knots)" if entry.knots else "")
        if entry.reason:
            what = f"left as it is ({calibration.method} asked): {entry.reason}"
        what += ", negative sampling corrected" if entry.corrected else ""
        ece = ""
        if entry.val is not None and entry.val.before.ece is not None:
            ece = f"; val ECE {entry.val.before.ece:.4f} -> {entry.val.after.ece:.4f}"
        lines[name] = f"calibration of {name}: {what}{ece}"
    return lines


# ---- applying (TensorFlow, traced into the export) ---------------------------------------------


def piecewise_linear(p: tf.Tensor, x: list[float], y: list[float]) -> tf.Tensor:
    """Linear interpolation through the knots (x increasing), flat beyond the ends: numpy's
    `interp` in float32 graph ops (searchsorted, gather)."""
    p = tf.convert_to_tensor(p, tf.float32)
    if len(x) == 1:
        return tf.fill(tf.shape(p), tf.constant(y[0], tf.float32))
    knots_x, knots_y = tf.constant(x, tf.float32), tf.constant(y, tf.float32)
    flat = tf.reshape(p, [-1])
    right = tf.clip_by_value(tf.searchsorted(knots_x, flat, side="right"), 1, len(x) - 1)
    x0, x1 = tf.gather(knots_x, right - 1), tf.gather(knots_x, right)
    y0, y1 = tf.gather(knots_y, right - 1), tf.gather(knots_y, right)
    t = tf.clip_by_value((flat - x0) / (x1 - x0), 0.0, 1.0)
    return tf.reshape(y0 + t * (y1 - y0), tf.shape(p))


def sigmoid_of_logit(p: tf.Tensor, a: float, b: float) -> tf.Tensor:
    """sigmoid(a * logit(p) + b) in float32, p clipped to [EPSILON, 1 - EPSILON] first."""
    p = tf.clip_by_value(tf.convert_to_tensor(p, tf.float32), EPSILON, 1.0 - EPSILON)
    return tf.sigmoid(a * (tf.math.log(p) - tf.math.log1p(-p)) + b)


def _apply_none(entry: TaskCalibration, p: tf.Tensor) -> tf.Tensor:
    return p


def _apply_isotonic(entry: TaskCalibration, p: tf.Tensor) -> tf.Tensor:
    return piecewise_linear(p, entry.x or [], entry.y or [])


def _apply_platt(entry: TaskCalibration, p: tf.Tensor) -> tf.Tensor:
    return sigmoid_of_logit(p, entry.a or 0.0, entry.b or 0.0)


def _apply_temperature(entry: TaskCalibration, p: tf.Tensor) -> tf.Tensor:
    return sigmoid_of_logit(p, 1.0 / (entry.temperature or 1.0), 0.0)


APPLY: dict[str, Callable[[TaskCalibration, tf.Tensor], tf.Tensor]] = {
    "none": _apply_none,
    "isotonic": _apply_isotonic,
    "platt": _apply_platt,
    "temperature": _apply_temperature,
}


@tf.autograph.experimental.do_not_convert  # plain graph ops: nothing for autograph to rewrite
def export_outputs(
    calibration: ExportCalibration, schema: Schema, raw: Mapping[str, tf.Tensor]
) -> dict[str, tf.Tensor]:
    """What the export's signature returns from the model's scores `raw`: every output of the
    schema calibrated (corrected, then its calibrator; a product, the product of its tasks'), and
    every output's raw score under `raw_<name>`; all float32."""
    scores = {name: tf.cast(raw[name], tf.float32) for name in schema.output_names}
    served = dict(scores)
    for name, entry in calibration.tasks.items():
        if entry.method == "product":
            continue
        score = scores[name]
        if entry.corrected:
            score = correct_negative_sampling(score, calibration.negative_sampling_rate)
        served[name] = APPLY[entry.method](entry, score)
    for product in schema.products:
        value = served[product.of[0]]
        for name in product.of[1:]:
            value = value * served[name]
        served[product.name] = value
    return {**served, **{raw_output(name): score for name, score in scores.items()}}


def calibrated_scorer(score: ScoreFn, calibration: ExportCalibration, schema: Schema) -> ScoreFn:
    """`score` (a Keras model's scorer) followed by the export's calibration: the same outputs as
    the exported signature, plus the model's outputs the export does not serve (auxiliary tasks)."""

    def calibrated(features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        raw = score(features)
        return {**raw, **export_outputs(calibration, schema, raw)}

    return calibrated
