"""Arrow columns become raw values in the schema's conventions; bad column types name the column."""

from __future__ import annotations

import pyarrow as pa
import pytest

from feature_store.column_values import column_values
from feature_store.errors import DataFileError
from ranker.schema import Feature


def _feature(kind: str) -> Feature:
    extra = {
        "categorical": {"num_buckets": 10},
        "numeric": {},
        "sequence": {"num_buckets": 10, "max_length": 4},
    }[kind]
    return Feature.model_validate({"name": "f", "type": kind, "entity": "item", **extra})


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        ([1, -5, None], pa.int64(), ["1", "-5", None]),
        (["a", None, ""], pa.string(), ["a", None, ""]),
        ([True, False], pa.bool_(), ["True", "False"]),  # str(), as training does
        ([1.5, 2.0], pa.float64(), ["1.5", "2.0"]),
    ],
)
def test_categorical_values_are_str_of_the_value(values, kind, expected) -> None:
    column = pa.chunked_array([pa.array(values, kind)])
    assert column_values(_feature("categorical"), column, "x.parquet") == expected


def test_dictionary_encoded_strings_are_decoded() -> None:
    column = pa.chunked_array([pa.array(["b", "a", "b"]).dictionary_encode()])
    assert column_values(_feature("categorical"), column, "x.parquet") == ["b", "a", "b"]


def test_numeric_values_are_float32_and_nan_is_missing() -> None:
    column = pa.chunked_array([pa.array([0.1, float("nan"), None, 3], pa.float64())])
    values = column_values(_feature("numeric"), column, "x.parquet")
    assert values[1:] == [None, None, 3.0]
    assert values[0] == pa.array([0.1], pa.float32())[0].as_py()  # rounded to float32


def test_integer_numerics_beyond_float32_precision_are_rounded_not_refused() -> None:
    column = pa.chunked_array([pa.array([16_777_217], pa.int64())])
    assert column_values(_feature("numeric"), column, "x.parquet") == [16_777_216.0]


def test_sequences_become_lists_of_strings() -> None:
    column = pa.chunked_array([pa.array([[1, 2], None, [], [3, None]], pa.list_(pa.int64()))])
    assert column_values(_feature("sequence"), column, "x.parquet") == [
        ["1", "2"],
        None,
        [],
        ["3", ""],
    ]


@pytest.mark.parametrize(
    ("kind", "column", "message"),
    [
        ("numeric", pa.array(["1.5"]), "must hold numbers, but it holds string"),
        ("sequence", pa.array(["a"]), "must hold lists, but it holds string"),
    ],
)
def test_a_column_of_the_wrong_type_names_file_and_column(kind, column, message) -> None:
    with pytest.raises(
        DataFileError, match=f"^data/items.parquet: column 'f' is {kind}.*{message}"
    ):
        column_values(_feature(kind), pa.chunked_array([column]), "data/items.parquet")
