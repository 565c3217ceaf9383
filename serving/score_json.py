"""The score rows of a response, written as JSON without a dict per row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np

_SCALE = 10**8  # scores are written with 8 decimals


def scores_json(
    outputs: Sequence[str], scores: dict[str, np.ndarray], item_ids: Sequence[str] | None = None
) -> str:
    """The JSON array of score rows, `[{"item_id": id, TASK: float, ...}, ...]` (without
    `item_id` when `item_ids` is None), written by one `%` format over every value: no dict per
    row for `json.dumps`, no Python loop per row.

    Scores are float32 rounded to 8 decimals (error <= 5e-9, far below float32's own precision
    near 1) and written with exactly 8 ("0.02818460"), from two integers each: `%d` costs a
    third to a half of `float.__repr__`, which was most of the cost of writing a 500-row
    response. Columns with a score of 1e9 or more fall back to `repr` of the rounded float.
    """
    fields: list[str] = []
    columns: list[list[Any]] = []
    if item_ids is not None:
        fields.append('"item_id":%s')
        columns.append([encode_basestring_ascii(item_id) for item_id in item_ids])
    for name in outputs:
        values = scores[name].astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"the model returned a non-finite score for {name!r}")
        conversion, arguments = _decimals(values)
        fields.append(f"{_template(name)}:{conversion}")
        columns += arguments
    if not columns:
        return "[]"
    rows, width = len(columns[0]), len(columns)
    flat: list[Any] = [None] * (rows * width)
    for at, column in enumerate(columns):  # row-major: id, then each score's arguments
        flat[at::width] = column  # ValueError if a column has another length
    row = "{" + ",".join(fields) + "}"
    return ("[" + ",".join([row] * rows) + "]") % tuple(flat)


def _decimals(values: np.ndarray) -> tuple[str, list[list[Any]]]:
    """`values` rounded to 8 decimals as a `%` conversion and its argument columns: sign, whole
    part and 8-digit fraction (integers, exact), or `%r` of the rounded float past 1e9."""
    units = np.rint(np.abs(values) * _SCALE)  # what np.round(values, 8) rounds to, times 1e8
    if units.size and units.max() >= 1e9 * _SCALE:  # int64 holds up to 9.2e18
        return "%r", [np.round(values, 8).tolist()]
    whole, fraction = np.divmod(units.astype(np.int64), _SCALE)
    signs = np.where((values < 0) & (units > 0), "-", "")
    return "%s%d.%08d", [signs.tolist(), whole.tolist(), fraction.tolist()]


def _template(name: str) -> str:
    """`name` as a JSON string that is safe inside a `%` format."""
    return str(encode_basestring_ascii(name)).replace("%", "%%")


def with_scores(head: dict[str, Any], key: str, scores: str) -> str:
    """`json.dumps(head)` with `key` set to the already-encoded JSON `scores`, appended last."""
    encoded = json.dumps(head, allow_nan=False)
    separator = "," if head else ""
    return f"{encoded[:-1]}{separator}{encode_basestring_ascii(key)}:{scores}}}"
