"""The `features` of an exposure line (`mtrank serve --log-features`): the exact values the
serving model was given for the returned rows, grouped by the schema's entity.

    {"user": {NAME: VALUE}, "context": {NAME: VALUE}, "items": {NAME: [VALUE per returned item]}}

User and context values are the same on every row of a request's batch (broadcast), so they are
written once; item features are columns over the returned items, in response order. VALUE:
categorical -> str (UTF-8 bytes from the store decoded; "" is the missing value); numeric -> the
float32 the model got, written as the shortest repr of that float32 as a float64 (`0.1`, not
`0.10000000149011612`), so `np.float32(value)` gives it back exactly (null if it was not finite);
sequence -> the list of its non-empty elements (the "" padding dropped: training pads the same way
again). Built in the exposure log's writer thread, never on the request path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ranker.schema import Feature, Schema


def served_features(
    schema: Schema, batch: Mapping[str, np.ndarray], order: np.ndarray | None
) -> dict[str, dict[str, Any]]:
    """The features block of one exposure: `batch` (one row per candidate) for the returned
    rows `order` (every row for None)."""
    out: dict[str, dict[str, Any]] = {"user": {}, "context": {}, "items": {}}
    for feature in schema.features:
        column = np.asarray(batch[feature.name])
        if feature.entity == "item":
            rows = column if order is None else column[order]
            out["items"][feature.name] = values(feature, rows)
        else:
            out[feature.entity][feature.name] = values(feature, column[:1])[0]
    return out


def values(feature: Feature, column: np.ndarray) -> list[Any]:
    """One batch column as JSON values (see the module's docstring)."""
    if feature.type == "numeric":
        numbers = np.asarray(column, dtype=np.float32)
        shortest = numbers.astype(str).astype(np.float64)  # numpy writes float32's shortest repr
        return [v if math.isfinite(v) else None for v in shortest.tolist()]
    if feature.type == "categorical":
        return [_text(v) for v in column.tolist()]
    return [[_text(v) for v in row if v] for row in column.tolist()]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
