"""The score rows of a response, written as JSON without a dict per row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np

_SCALE = 10**8  # scores are written with 8 decimals
# "000" .. "999" as ASCII codes: the digits of d.dddddddd (times 1e8) are three groups of three
_GROUPS = np.array([list(f"{i:03d}".encode()) for i in range(1000)], np.uint8)


def scores_json(
    outputs: Sequence[str], scores: dict[str, np.ndarray], item_ids: Sequence[str] | None = None
) -> str:
    """The JSON array of score rows, `[{"item_id": id, TASK: float, ...}, ...]` (without
    `item_id` when `item_ids` is None), in the order of `item_ids`, with no dict per row for
    `json.dumps` and no Python formatting per value.

    Scores are float32 rounded to 8 decimals (error <= 5e-9, far below float32's own precision
    near 1) and written with exactly 8 ("0.02818460"). When every score rounds into [0, 10)
    (probabilities), numpy writes the digits (`_fixed_rows`); otherwise one `%` format writes
    every value from two integers (`_formatted_rows`): `%d` costs a third to a half of
    `float.__repr__`, which was most of the cost of writing a 500-row response. Both write the
    same bytes for the same scores.
    """
    values = [_finite(name, scores[name]) for name in outputs]
    fixed = _fixed_rows(outputs, values, item_ids)
    return fixed if fixed is not None else _formatted_rows(outputs, values, item_ids)


def _formatted_rows(
    outputs: Sequence[str], values: list[np.ndarray], item_ids: Sequence[str] | None
) -> str:
    """The rows written by one `%` format over every value; columns with a score of 1e9 or more
    fall back to `repr` of the rounded float."""
    fields: list[str] = []
    columns: list[list[Any]] = []
    if item_ids is not None:
        fields.append('"item_id":%s')
        columns.append([encode_basestring_ascii(item_id) for item_id in item_ids])
    for name, scores in zip(outputs, values, strict=True):
        conversion, arguments = _decimals(scores)
        fields.append(f"{_template(name)}:{conversion}")
        columns += arguments
    if not columns:
        return "[]"
    rows, width = len(columns[0]), len(columns)
    flat: list[Any] = [None] * (rows * width)
    for at, arguments in enumerate(columns):  # row-major: id, then each score's arguments
        flat[at::width] = arguments  # ValueError if a column has another length
    row = "{" + ",".join(fields) + "}"
    return ("[" + ",".join([row] * rows) + "]") % tuple(flat)


def _finite(name: str, scores: np.ndarray) -> np.ndarray:
    values = scores.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"the model returned a non-finite score for {name!r}")
    return values


def _fixed_rows(
    outputs: Sequence[str], values: list[np.ndarray], item_ids: Sequence[str] | None
) -> str | None:
    """The rows when every score rounds into [0, 10) (probabilities), else None. Each score is
    then ten characters, "d.dddddddd", so everything of a row after its item id has one width:
    numpy writes that part of every row as one table of bytes (digits from integer division),
    and one join puts the ids in front."""
    if not values:
        return None
    units = np.rint(np.stack(values, axis=1) * _SCALE)  # (rows, outputs)
    if units.size and not (units.min() >= 0 and units.max() < 10 * _SCALE):
        return None
    rows = len(units)
    if item_ids is not None and len(item_ids) != rows:
        raise ValueError(f"{len(item_ids)} item ids for {rows} score rows")
    head = "," if item_ids is not None else "{"
    parts = [f"{head if i == 0 else ','}{encode_basestring_ascii(name)}:" for i, name in
             enumerate(outputs)]  # fmt: skip
    width = sum(len(part) + 10 for part in parts) + 2  # and "}," closing the row
    table = np.empty((rows, width), np.uint8)
    whole = units.astype(np.int64)
    groups = np.stack([whole // 1_000_000, whole // 1000 % 1000, whole % 1000], axis=-1)
    digits = np.take(_GROUPS, groups, axis=0).reshape(rows, len(outputs), 9)
    at = 0
    for i, part in enumerate(parts):
        encoded = np.frombuffer(part.encode("ascii"), np.uint8)
        table[:, at : at + len(encoded)] = encoded
        at += len(encoded)
        table[:, at] = digits[:, i, 0]
        table[:, at + 1] = ord(".")
        table[:, at + 2 : at + 10] = digits[:, i, 1:]
        at += 10
    table[:, at:] = np.frombuffer(b"},", np.uint8)
    text = table.tobytes().decode("ascii")
    if item_ids is None:
        return f"[{text[:-1]}]"
    pieces: list[str] = ['{"item_id":'] * (3 * rows)
    pieces[1::3] = [encode_basestring_ascii(item_id) for item_id in item_ids]
    pieces[2::3] = [text[start : start + width] for start in range(0, rows * width, width)]
    return f"[{''.join(pieces)[:-1]}]"


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
