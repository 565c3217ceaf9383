"""Raw feature values to the tensors of a model's `serving_default` signature, checked by type.

One `FeatureBatcher` per loaded model version, built from the schema in its metadata.json:

- `context(values)` checks the request's context against the schema (categorical -> str, ints
  accepted as `str(value)`; numeric -> finite float; sequence -> list of str) and raises
  `InvalidInput` naming the field; context features the request leaves out get their default.
- `rank_batch(found, context)` lays the store's `OnlineFeatures` and the context out as one batch:
  the user and item features are the store's `columns` (numpy views of the stored records, user
  values broadcast), context values are converted once and broadcast over the candidates
  (read-only views, no copy per row). Sequences keep their first `max_length` non-empty elements
  and are padded with "" (the training pipeline's convention).
- `instances_batch(instances)` does the same for TF Serving's row format (`:predict`), where every
  row carries its own raw features; absent features get their default.

Strings are numpy arrays of `str` (objects; TensorFlow encodes them as UTF-8) or, from the store,
of UTF-8 `bytes`; numerics are float32. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feature_store.online_features import OnlineFeatures
from ranker.schema import Feature, Schema
from serving.errors import InvalidInput, Loc

Batch = dict[str, np.ndarray]
Value = str | float | list[str]


class FeatureBatcher:
    """Builds the signature's input tensors for one schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.features = {f.name: f for f in schema.features}
        self.context_features = {f.name: f for f in schema.entity_features("context")}

    # ---- checking raw values --------------------------------------------------------------

    def context(self, values: Mapping[str, Any] | None) -> tuple[dict[str, Value], list[str]]:
        """The request's context typed by the schema, defaults filled; and the names defaulted."""
        values = values or {}
        for name in values:
            if name not in self.context_features:
                raise InvalidInput(("body", "context", name), self._not_context(name))
        typed: dict[str, Value] = {}
        missing: list[str] = []
        for name, feature in self.context_features.items():
            raw = values.get(name)
            if raw is None:
                typed[name] = feature.missing_value
                missing.append(name)
            else:
                typed[name] = check_value(feature, raw, ("body", "context", name))
        return typed, missing

    def _not_context(self, name: str) -> str:
        feature = self.features.get(name)
        known = sorted(self.context_features)
        if feature is not None:
            return (
                f"{name!r} is a {feature.entity} feature: it comes from the feature store, not "
                f"the request (context features: {known})"
            )
        return f"unknown context feature {name!r} (context features: {known})"

    # ---- batches ----------------------------------------------------------------------------

    def rank_batch(self, found: OnlineFeatures, context: Mapping[str, Value]) -> Batch:
        """One row per candidate of `found`: user and context values repeated, item values as read."""
        n = len(found.item_ids)
        batch: Batch = found.columns(self.schema)
        for name, feature in self.context_features.items():
            batch[name] = broadcast(feature, context[name], n)
        return {name: batch[name] for name in self.features}

    def instances_batch(self, instances: Sequence[Mapping[str, Any]]) -> Batch:
        """TF Serving's `instances`: one row per dict of raw features; unknown names are 422."""
        for i, instance in enumerate(instances):
            for name in instance:
                if name not in self.features:
                    raise InvalidInput(
                        ("body", "instances", i, name),
                        f"unknown feature {name!r} (features: {list(self.features)})",
                    )
        batch: Batch = {}
        for name, feature in self.features.items():
            raw = [instance.get(name) for instance in instances]
            batch[name] = column(feature, check_column(feature, raw, ("body", "instances")))
        return batch

    def default_batch(self, rows: int) -> Batch:
        """Every feature at its missing value, plus the first vocabulary entry in odd rows (warmup)."""
        batch: Batch = {}
        for name, feature in self.features.items():
            values: list[Any] = [feature.missing_value] * rows
            if feature.vocabulary:
                values[1::2] = [feature.vocabulary[0]] * len(values[1::2])
                if feature.type == "sequence":
                    values[1::2] = [[feature.vocabulary[0]]] * len(values[1::2])
            batch[name] = column(feature, values)
        return batch


# ---- one feature's values ---------------------------------------------------------------------


def check_value(feature: Feature, raw: Any, loc: Loc) -> Value:
    """`raw` (not None) as the schema's raw type for `feature`, or InvalidInput naming `loc`."""
    if feature.type == "numeric":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidInput(loc, _expected("a number", feature, raw), "float_type")
        value = float(raw)
        if not math.isfinite(value):
            raise InvalidInput(loc, f"must be a finite number, got {raw!r}", "finite_number")
        return value
    if feature.type == "categorical":
        if isinstance(raw, str):
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)
        raise InvalidInput(loc, _expected("a string", feature, raw), "string_type")
    if not isinstance(raw, list):
        raise InvalidInput(loc, _expected("a list of strings", feature, raw), "list_type")
    out: list[str] = []
    for j, element in enumerate(raw):
        if isinstance(element, str):
            out.append(element)
        elif isinstance(element, int) and not isinstance(element, bool):
            out.append(str(element))
        else:
            raise InvalidInput((*loc, j), _expected("a string", feature, element), "string_type")
    return out


def check_column(feature: Feature, raw: list[Any], loc: Loc) -> list[Any]:
    """`raw` (one value per row, None = missing) checked and typed; defaults in place of None.

    The common case (every value already of the right JSON type) is checked without converting.
    """
    default = feature.missing_value
    if feature.type == "categorical" and all(type(v) is str for v in raw):
        return raw
    if feature.type == "numeric" and all(type(v) is float or type(v) is int for v in raw):
        if not np.isfinite(np.asarray(raw, dtype=np.float64)).all():
            bad = next(i for i, v in enumerate(raw) if not math.isfinite(v))
            raise InvalidInput(
                (*loc, bad, feature.name), f"must be a finite number, got {raw[bad]}"
            )
        return raw
    return [
        default if v is None else check_value(feature, v, (*loc, i, feature.name))
        for i, v in enumerate(raw)
    ]


def column(feature: Feature, values: Sequence[Any]) -> np.ndarray:
    """A column of typed raw values as the signature's array (sequences padded)."""
    if feature.type == "numeric":
        return np.asarray(values, dtype=np.float32)
    if feature.type == "categorical":
        return np.asarray(values, dtype=object)
    assert feature.max_length is not None
    out = np.full((len(values), feature.max_length), "", dtype=object)
    for row, sequence in enumerate(values):  # ragged: no single vector op lays these out
        padded = pad(sequence, feature.max_length)
        out[row, : len(padded)] = padded
    return out


def broadcast(feature: Feature, value: Value, rows: int) -> np.ndarray:
    """One typed raw value repeated `rows` times, as the signature's array: a read-only view
    that repeats one row (`np.broadcast_to`), not a copy per row. `tf.constant` turns it into a
    tensor as fast as a full array (`Servable.predict` converts with it for that reason)."""
    if feature.type == "numeric":
        return np.broadcast_to(np.array(value, dtype=np.float32), (rows,))
    if feature.type == "categorical":
        return np.broadcast_to(np.array(value, dtype=object), (rows,))
    assert feature.max_length is not None and isinstance(value, list)
    row = np.full(feature.max_length, "", dtype=object)
    padded = pad(value, feature.max_length)
    row[: len(padded)] = padded
    return np.broadcast_to(row, (rows, feature.max_length))


def pad(sequence: Sequence[str], max_length: int) -> list[str]:
    """The first `max_length` non-empty elements (training's convention; padding is the caller's)."""
    return [element for element in sequence if element][:max_length]


def _expected(what: str, feature: Feature, raw: Any) -> str:
    return (
        f"{feature.type} feature {feature.name!r} takes {what}, got {type(raw).__name__} {raw!r}"[
            :300
        ]
    )
