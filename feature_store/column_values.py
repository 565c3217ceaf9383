"""Arrow columns to raw feature values, in the conventions of `ranker.schema`.

Categorical: strings; integers (and anything else) become `str(value)`. Numeric: float32, with
NaN treated as missing. Sequence: lists of strings, elements converted like categoricals. A null
becomes None, which materialization leaves out of the stored row (readers fill the default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyarrow as pa

from feature_store.errors import DataFileError
from feature_store.records import Value
from ranker.schema import Feature


def column_values(feature: Feature, column: pa.ChunkedArray, where: str) -> Sequence[Value | None]:
    """The raw value of each row of `column` for `feature`, None where missing.

    `where` names the file in errors, e.g. "data/items.parquet".
    """
    check_type(feature, column.type, where)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if feature.type == "categorical":
        return strings(column)
    if feature.type == "numeric":
        floats = column.cast(pa.float32(), safe=False).to_pylist()  # float32 by convention
        return [None if v is None or math.isnan(v) else v for v in floats]
    return [
        None if seq is None else ["" if v is None else str(v) for v in seq]
        for seq in column.to_pylist()
    ]


def check_type(feature: Feature, kind: pa.DataType, where: str) -> None:
    """Raise DataFileError naming the file and column unless `kind` can hold `feature`'s values.

    Categorical columns may hold anything (values become strings); numeric ones need integers,
    floats or booleans; sequences need lists.
    """
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if feature.type == "numeric":
        ok = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        expected = "numbers"
    elif feature.type == "sequence":
        ok = (
            pa.types.is_list(kind)
            or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)
        )
        expected = "lists"
    else:
        return
    if not ok:
        raise DataFileError(
            f"{where}: column {feature.name!r} is {feature.type} in the schema, so it must hold "
            f"{expected}, but it holds {kind}"
        )


def strings(column: pa.ChunkedArray) -> list[str | None]:
    """`str()` of every value of `column` (strings as they are), None for nulls."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.to_pylist()
    if pa.types.is_integer(kind):
        return column.cast(pa.string()).to_pylist()
    return [None if v is None else str(v) for v in column.to_pylist()]
