"""Arrow columns into the model's features and labels: numpy per record batch, then TensorFlow.

A feature column crosses from Python into TensorFlow as flat numpy arrays (its `PARTS`), made with
vectorized pyarrow and numpy (categorical columns are dictionary-encoded, so only distinct values
become Python objects), and is decoded into the model-boundary tensor inside the tf.data graph:

* categorical values as tf.string [batch] (integers converted like `str()`);
* numeric values as float32 [batch];
* sequences as tf.string [batch, max_length] padded with "" (longer lists keep their first
  max_length items; empty strings inside a list are dropped; a string column is split on
  `SEQUENCE_SEPARATOR`);
* labels as float32 [batch].

Documented fills (never errors): a null or NaN numeric value becomes the feature's `default`
(0.0 unless set); a null categorical value becomes "". A null or NaN label, or a binary label
outside {0, 1}, is a `DataError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ranker.keras_compat import tf
from ranker.schema import Feature
from training.data.errors import DataError, first_line

SEQUENCE_SEPARATOR = "|"

Arrays = dict[str, np.ndarray]
Tensors = dict[str, Any]  # name -> tf.Tensor

PARTS: dict[str, list[tuple[str, tf.DType]]] = {
    "numeric": [("value", tf.float32)],
    "categorical": [("bytes", tf.string), ("offsets", tf.int64)],
    "sequence": [("bytes", tf.string), ("offsets", tf.int64), ("splits", tf.int64)],
}
"""The flat arrays (name, dtype) each feature type crosses into TensorFlow as."""

_STRING_TYPES = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)


def type_kind(dtype: pa.DataType) -> str:
    """'integer', 'number', 'string', 'list' or 'other' for an Arrow type."""
    if pa.types.is_dictionary(dtype):
        return type_kind(dtype.value_type)
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_boolean(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if any(is_(dtype) for is_ in _STRING_TYPES):
        return "string"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return "list"
    if pa.types.is_null(dtype):
        return "null"
    return "other"


def encode_feature(feature: Feature, column: pa.Array, path: Path) -> Arrays:
    """The flat arrays one feature column crosses into TensorFlow as (see `PARTS`)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if feature.type == "numeric":
        return {"value": _encode_numeric(column, feature, path)}
    if feature.type == "categorical":
        return _string_buffers(column)
    splits, values = _sequence_values(column)
    return {**_string_buffers(values), "splits": splits}


def _encode_numeric(column: pa.Array, feature: Feature, path: Path) -> np.ndarray:
    """float32 values with nulls and NaNs replaced by the documented fill."""
    fill = float(feature.missing_value)  # type: ignore[arg-type]
    try:
        values = pc.cast(column, pa.float32())
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: column {feature.name!r}: {first_line(err)}") from None
    array = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
    array[np.isnan(array)] = fill
    return array


def _string_buffers(column: pa.Array) -> Arrays:
    """A column as strings ("" for nulls) in Arrow's layout: all bytes and n + 1 offsets.

    TensorFlow cuts the strings back out with one vectorized `tf.strings.substr`, so no Python
    object is made per value.
    """
    value_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    binary = pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type)
    strings = pc.cast(column, pa.binary() if binary else pa.string())
    if strings.null_count:
        strings = pc.fill_null(strings, "")
    _, offset_buffer, data = strings.buffers()
    start = strings.offset
    offsets = np.frombuffer(offset_buffer, np.int32)[start : start + len(strings) + 1]
    first, last = int(offsets[0]), int(offsets[-1])
    raw = data.slice(first, last - first).to_pybytes() if data is not None else b""
    return {"bytes": np.array(raw, dtype=object), "offsets": offsets.astype(np.int64) - first}


def _sequence_values(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Row splits and flat values of a list (or '|'-joined string) column, dropping "" and nulls."""
    if type_kind(column.type) == "string":
        strings = pc.cast(column, pa.string()) if pa.types.is_dictionary(column.type) else column
        column = pc.split_pattern(pc.fill_null(strings, ""), SEQUENCE_SEPARATOR)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    splits = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    values = column.flatten()
    if type_kind(values.type) != "string":
        values = pc.cast(values, pa.string())
    nonempty = pc.fill_null(pc.not_equal(pc.binary_length(values), 0), False)
    keep = nonempty.to_numpy(zero_copy_only=False)
    if keep.all():
        return splits, values
    kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept[splits], values.filter(pa.array(keep))


def encode_label(column: pa.Array, name: str, binary: bool, path: Path) -> np.ndarray:
    """float32 label values; a null/NaN label, or a binary one outside {0, 1}, is a DataError."""
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if np.isnan(values).any():
        raise DataError(f"{path}: label column {name!r} has a null or NaN value")
    if binary:
        bad = (values != 0.0) & (values != 1.0)
        if bad.any():
            raise DataError(
                f"{path}: label column {name!r} has value {values[bad][0]:g}; "
                "a binary task's label must be 0 or 1"
            )
    return values.astype(np.float32)


def decode_feature(feature: Feature, parts: Mapping[str, Any]) -> Any:
    """The model-boundary tensor of one feature from its encoded parts."""
    if feature.type == "numeric":
        return tf.convert_to_tensor(parts["value"], tf.float32)
    offsets = tf.convert_to_tensor(parts["offsets"], tf.int64)
    strings = tf.strings.substr(parts["bytes"], offsets[:-1], offsets[1:] - offsets[:-1])
    if feature.type == "categorical":
        return strings
    ragged = tf.RaggedTensor.from_row_splits(strings, parts["splits"], validate=False)
    return ragged.to_tensor(default_value="", shape=[None, feature.max_length])


def append_fill(encoded: Arrays, feature: Feature) -> Arrays:
    """Encoded parts of an entity table with one extra row holding the documented fill."""
    parts = dict(encoded)
    if feature.type == "numeric":
        fill = np.float32(feature.missing_value)  # type: ignore[arg-type]
        parts["value"] = np.append(parts["value"], fill)
    elif feature.type == "categorical":
        parts["offsets"] = np.append(parts["offsets"], parts["offsets"][-1])
    else:
        parts["splits"] = np.append(parts["splits"], parts["splits"][-1])
    return parts
