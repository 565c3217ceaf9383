"""OnlineFeatures: what serving gets back from a lookup, laid out for the model, defaults filled in."""

from __future__ import annotations

from typing import Any

import numpy as np

from feature_store.online_features import OnlineFeatures
from feature_store.records import Column, Layout, Record
from ranker.schema import Schema


def _lists(columns: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    return {name: values.tolist() for name, values in columns.items()}


def test_columns_fill_defaults_and_take_keys_from_the_request(schema: Schema) -> None:
    found = OnlineFeatures.from_rows(
        user_id="u1",
        item_ids=["i1", "i2", "i3"],
        user={"age": 30.0, "recent": ["7", "8"]},
        items=[{"price": 2.5, "category": "7"}, None, {"category": "9"}],
    )
    columns = found.columns(schema)
    assert _lists(columns) == {
        "user_id": ["u1", "u1", "u1"],
        "age": [30.0, 30.0, 30.0],
        "segment": [b"", b"", b""],  # not stored: the categorical missing value
        "recent": [[b"7", b"8", b""]] * 3,  # padded to the schema's max_length (3)
        "item_id": ["i1", "i2", "i3"],
        "price": [2.5, 0.0, 0.0],  # item i2 absent, i3 has no price
        "category": [b"7", b"", b"9"],
    }
    assert columns["price"].dtype == np.float32 and columns["age"].dtype == np.float32
    assert not found.missing_user
    assert found.missing_items == ["i2"]
    assert not found.degraded


def test_a_missing_user_gets_the_schema_defaults(schema: Schema) -> None:
    found = OnlineFeatures.from_rows("u9", ["i1"], None, [{"price": 1.0}])
    columns = _lists(found.columns(schema))
    assert found.missing_user
    assert columns["user_id"] == ["u9"]
    assert columns["age"] == [-1.0]  # the feature's `default`
    assert columns["recent"] == [[b"", b"", b""]]


def test_unavailable_is_degraded_with_everything_missing(schema: Schema) -> None:
    found = OnlineFeatures.unavailable("u1", ["i1", "i2"])
    assert found.degraded
    assert found.missing_user
    assert found.missing_items == ["i1", "i2"]
    columns = _lists(found.columns(schema))
    assert columns["price"] == [0.0, 0.0]
    assert columns["item_id"] == ["i1", "i2"]
    assert columns["age"] == [-1.0, -1.0]


def test_no_items_gives_empty_columns(schema: Schema) -> None:
    columns = OnlineFeatures.from_rows("u1", [], {"age": 3.0}, []).columns(schema)
    assert columns["age"].shape == (0,)
    assert columns["recent"].shape == (0, 3)
    assert columns["item_id"].shape == (0,)


def test_columns_are_cut_from_the_records_in_their_stored_order(schema: Schema) -> None:
    layout = Layout(
        user=Record(
            (
                Column("recent", "sequence", width=2, length=5),
                Column("retired", "categorical", width=1),
                Column("age", "numeric"),
            )
        ),
        item=Record(
            (
                Column("category", "categorical", width=2),
                Column("retired", "categorical", width=1),
                Column("price", "numeric"),
                Column("segment", "numeric"),  # the schema says categorical: not used
            )
        ),
    )
    user = layout.user.decode(
        layout.user.encode([{"recent": ["7", "", "8", "9", "10"], "retired": "x"}]), [b"u"]
    )
    rows = [{"category": "c1", "retired": "x", "price": 1.5, "segment": 2.0}, None, {"price": 2.5}]
    blobs = [None if row is None else layout.item.encode([row])[0] for row in rows]
    items = layout.item.decode(blobs, [b"i1", b"i2", b"i3"])
    found = OnlineFeatures("u1", ["i1", "i2", "i3"], layout, user, items, [1])
    columns = _lists(found.columns(schema))  # "retired" is stored but not in the schema: ignored
    assert {name: columns[name] for name in ("age", "recent", "price", "category")} == {
        "age": [-1.0, -1.0, -1.0],  # age missing: NaN, the feature's default
        "recent": [[b"7", b"8", b"9"]] * 3,  # the first max_length (3) non-empty elements
        "price": [1.5, 0.0, 2.5],
        "category": [b"c1", b"", b""],
    }
    assert found.user == {"recent": ["7", "8", "9", "10"], "retired": "x"}
    assert found.items == [
        {"category": "c1", "retired": "x", "price": 1.5, "segment": 2.0},
        None,
        {"price": 2.5},
    ]


def test_user_columns_are_broadcast_views_and_item_strings_views_of_the_records(
    schema: Schema,
) -> None:
    found = OnlineFeatures.from_rows(
        "u1", ["i1", "i2"], {"age": 3.0, "segment": "a"}, [{"category": "7"}, {"category": "8"}]
    )
    columns = found.columns(schema)
    assert columns["age"].strides == (0,) and columns["segment"].strides == (0,)
    assert columns["category"].base is not None  # no copy of the stored bytes
