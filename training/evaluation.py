"""Scoring a split with a model (Keras or a reloaded SavedModel) and computing its metrics.

`mtrank train` (test metrics) and `mtrank evaluate` share this code, so the two agree. Where the
scores include an output's raw score (`raw_<name>`, the export's score before correction and
calibration), its metrics gain `raw: {ece, calibration, auc, logloss}` of the raw score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ranker.contract import RAW_PREFIX, raw_output
from ranker.keras_compat import tf
from ranker.schema import Schema
from training import metrics
from training.data import (
    EntityTables,
    ReadOptions,
    column_names,
    file_format,
    make_dataset,
    read_columns,
    reader_errors,
)

ScoreFn = Callable[[Mapping[str, tf.Tensor]], Mapping[str, tf.Tensor]]


def score_dataset(
    score: ScoreFn, dataset: tf.data.Dataset
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Runs `score` over every (features, labels) batch; returns all scores and labels, in order."""
    scores: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    with reader_errors():
        for features, batch_labels in dataset:
            for name, value in score(features).items():
                scores.setdefault(name, []).append(np.asarray(value))
            for name, value in batch_labels.items():
                labels.setdefault(name, []).append(value.numpy())
    return _concat(scores), _concat(labels)


def evaluate_file(
    schema: Schema,
    score: ScoreFn,
    path: str | Path,
    batch_size: int = 8192,
    tables: EntityTables | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Per-output metrics of `score` on a labelled file, and the scores themselves."""
    dataset = make_dataset(path, schema, ReadOptions(batch_size=batch_size), tables=tables)
    scores, labels = score_dataset(score, dataset)
    return evaluate_scores(schema, scores, labels, user_ids(path, schema)), scores


RAW_METRICS = ("ece", "calibration", "auc", "logloss")


def evaluate_scores(
    schema: Schema,
    scores: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    users: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """`metrics.evaluate` of the scores; a binary output whose raw score is among them too gets
    `raw`: its raw score's ece, calibration, auc and logloss on the same rows."""
    results: dict[str, dict[str, Any]] = dict(metrics.evaluate(schema, scores, labels, users))
    raw = {name: scores[raw_output(name)] for name in scores if raw_output(name) in scores}
    if not raw:
        return results
    before = metrics.evaluate(schema, {**scores, **raw}, labels)
    for name, values in results.items():
        if name in raw and "auc" in values:
            values["raw"] = {key: before[name][key] for key in RAW_METRICS}
    return results


def user_ids(path: str | Path, schema: Schema) -> np.ndarray | None:
    """The user key column of a labelled file, which GAUC groups by; None if the file has none
    (a table without users: GAUC is then left out of the metrics)."""
    path = Path(path)
    if file_format(path) == "tfrecord" or schema.keys.user not in column_names(path):
        return None
    return read_columns(path, [schema.keys.user])[schema.keys.user]


def saved_model_scorer(path: str | Path, raw: bool = False) -> ScoreFn:
    """The `serving_default` signature of an exported model, as a scoring function: the scores it
    serves, and with `raw` also the raw ones (`raw_<name>`) where the export has them."""
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def score(features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        outputs = signature(**features)
        if raw:
            return outputs
        return {k: v for k, v in outputs.items() if not _is_raw(k, outputs)}

    return score


def _is_raw(name: str, outputs: Mapping[str, Any]) -> bool:
    return name.startswith(RAW_PREFIX) and name.removeprefix(RAW_PREFIX) in outputs


def keras_scorer(model: Any) -> ScoreFn:
    """A traced inference call of a Keras model, as a scoring function."""

    @tf.function(reduce_retracing=True)
    def score(features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        return model(features, training=False)

    return score


def json_safe(value: Any) -> Any:
    """Metrics as strict JSON: NaN and infinities (e.g. AUC of a one-class split) become null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def _concat(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
