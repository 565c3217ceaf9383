"""Scoring a split with a model (Keras or a reloaded SavedModel) and computing its metrics.

`mtrank train` (test metrics) and `mtrank evaluate` share this code, so the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
    return metrics.evaluate(schema, scores, labels, user_ids(path, schema)), scores


def user_ids(path: str | Path, schema: Schema) -> np.ndarray | None:
    """The user key column of a labelled file, which GAUC groups by; None if the file has none
    (a table without users: GAUC is then left out of the metrics)."""
    path = Path(path)
    if file_format(path) == "tfrecord" or schema.keys.user not in column_names(path):
        return None
    return read_columns(path, [schema.keys.user])[schema.keys.user]


def saved_model_scorer(path: str | Path) -> ScoreFn:
    """The `serving_default` signature of an exported model, as a scoring function."""
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def score(features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        return signature(**features)

    return score


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
