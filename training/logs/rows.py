"""The dataset's rows, built request by request (`Columns`): what `training.logs.dataset` says a
row holds, typed for Parquet.

Logged values are checked against their schema feature (categorical: a string; numeric: a number,
null for a value that was not finite; sequence: a list of strings); a value of another type is an
error naming the exposure's FILE:LINE and the feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ranker.errors import MtrankError
from ranker.schema import Feature, Schema
from training.logs.attribution import attributed_labels
from training.logs.exposures import ServedRequest
from training.logs.feedback import Feedback, is_number
from training.logs.skips import Skips

GROUPS = {"user": "user", "context": "context", "item": "items"}  # entity -> features group
META = ("request_id", "item_id", "time", "model", "version")


@dataclass
class Columns:
    """The dataset's columns, filled request by request."""

    schema: Schema
    from_feedback: tuple[str, ...]  # context features taken from the feedback
    window: float  # the attribution window, seconds
    features: dict[str, list[Any]] = field(init=False)
    labels: dict[str, list[float]] = field(init=False)
    meta: dict[str, list[Any]] = field(init=False)
    served: list[dict[str, float]] = field(default_factory=list)
    extras: list[dict[str, float]] = field(default_factory=list)
    request_starts: list[int] = field(default_factory=list)
    rows: int = 0

    def __post_init__(self) -> None:
        self.features = {f.name: [] for f in self.schema.features}
        self.labels = {label: [] for label in dict.fromkeys(self.schema.label_columns)}
        self.meta = {name: [] for name in META if name not in self.features}

    def add_request(
        self,
        request: ServedRequest,
        feedback: dict[str, Feedback],
        skips: Skips,
    ) -> bool:
        """Add the request's shown items that have feedback; False if none was added."""
        logged = _logged_values(request, self.schema)
        if logged is None:
            skips.count("features_incomplete")
            skips.count("feedback_of_skipped_exposure", len(feedback))
            return False
        index: dict[str, int] = {}
        for k, item_id in enumerate(request.item_ids):
            index.setdefault(item_id, k)
        shown = []
        for item_id, item_feedback in feedback.items():
            if item_id in index:
                shown.append((index[item_id], item_id, item_feedback))
            else:
                skips.count("feedback_unknown_item")
        start = self.rows
        for k, item_id, item_feedback in sorted(shown, key=lambda s: s[0]):
            self._add_row(request, logged, k, item_id, item_feedback, skips)
        if self.rows == start:
            return False
        self.request_starts.append(start)
        return True

    def _add_row(
        self,
        request: ServedRequest,
        logged: dict[str, Any],
        k: int,
        item_id: str,
        feedback: Feedback,
        skips: Skips,
    ) -> None:
        values = {}
        for feature in self.schema.features:
            value = logged[feature.name]
            values[feature.name] = value[k] if feature.entity == "item" else value
        for name in self.from_feedback:
            if name not in feedback.values:
                skips.count(f"feedback_without_{name}")
                return
            values[name] = _feedback_value(self.schema.feature(name), feedback)
        labels = attributed_labels(self.schema.tasks, feedback, request.time, self.window, skips)
        for name, column in self.features.items():
            column.append(values[name])
        for label, column in self.labels.items():
            column.append(labels[label])
        row = {
            "request_id": request.request_id,
            "item_id": item_id,
            "time": request.time,
            "model": request.model,
            "version": request.version,
        }
        for name, column in self.meta.items():
            column.append(row[name])
        self.served.append(
            {
                f"served_{output}": _score(c[k], request.where)
                for output, c in request.scores.items()
            }
        )
        taken = {*self.features, *self.labels, *self.meta, *self.served[-1]}
        self.extras.append(
            {
                (f"feedback_{name}" if name in taken else name): value
                for name, value in feedback.numbers().items()
                if name not in self.labels
            }
        )
        self.rows += 1

    def positives(self) -> dict[str, int]:
        return {label: int(np.count_nonzero(column)) for label, column in self.labels.items()}

    def table(self) -> pa.Table:
        columns: dict[str, pa.Array] = {}
        for feature in self.schema.features:
            columns[feature.name] = _feature_array(feature, self.features[feature.name])
        binary = {t.label for t in self.schema.tasks if t.type == "binary"}
        for label, values in self.labels.items():
            columns[label] = pa.array(values, pa.int8() if label in binary else pa.float64())
        for name, values in self.meta.items():
            columns[name] = pa.array(values, pa.float64() if name == "time" else pa.string())
        for rows in (self.served, self.extras):
            for name in dict.fromkeys(name for row in rows for name in row):
                columns[name] = pa.array([row.get(name) for row in rows], pa.float64())
        return pa.table(columns)


def _logged_values(request: ServedRequest, schema: Schema) -> dict[str, Any] | None:
    """Each schema feature's logged value (item features: their column), checked and typed;
    None if one is missing."""
    values: dict[str, Any] = {}
    for feature in schema.features:
        group = GROUPS[feature.entity]
        logged = request.features[group]
        if feature.name not in logged:
            return None
        where = f"{request.where}: features.{group}.{feature.name}"
        if feature.entity == "item":
            values[feature.name] = [_checked(feature, v, where) for v in logged[feature.name]]
        else:
            values[feature.name] = _checked(feature, logged[feature.name], where)
    return values


def _checked(feature: Feature, value: Any, where: str) -> Any:
    """A logged value of `feature`: str, a finite number (null: NaN), or a list of str."""
    if feature.type == "categorical" and isinstance(value, str):
        return value
    if feature.type == "numeric" and is_number(value) and math.isfinite(value):
        return float(value)
    if feature.type == "numeric" and value is None:  # logged for a non-finite value: the reader
        return math.nan  # fills the feature's default, as it does for a NaN in any file
    if (
        feature.type == "sequence"
        and isinstance(value, list)
        and all(isinstance(v, str) for v in value)
    ):
        return value
    expected = {"categorical": "a string", "numeric": "a number", "sequence": "a list of strings"}
    raise MtrankError(f"{where}: expected {expected[feature.type]}, got {value!r}")


def _score(value: Any, where: str) -> float:
    if not is_number(value):
        raise MtrankError(f"{where}: 'scores' must hold numbers, got {value!r}")
    return float(value)


def _feedback_value(feature: Feature, feedback: Feedback) -> Any:
    """A context feature's value taken from the feedback (an integer stands for its string)."""
    value = feedback.values[feature.name]
    if feature.type == "categorical" and isinstance(value, int):
        value = str(value)
    return _checked(feature, value, f"{feedback.where}: {feature.name!r}")


def _feature_array(feature: Feature, values: list[Any]) -> pa.Array:
    if feature.type == "numeric":  # the float32 the model got, held exactly in a float64
        exact = np.asarray(values, np.float64).astype(np.float32).astype(np.float64)
        return pa.array(exact, pa.float64())
    if feature.type == "sequence":
        return pa.array(values, pa.list_(pa.string()))
    return pa.array(values, pa.string())
