"""OnlineFeatures: what serving gets back from a lookup, defaults filled in."""

from __future__ import annotations

from feature_store.codec import Layout
from feature_store.store import OnlineFeatures
from ranker.schema import Schema


def test_columns_fill_defaults_and_take_keys_from_the_request(schema: Schema) -> None:
    found = OnlineFeatures.from_rows(
        user_id="u1",
        item_ids=["i1", "i2", "i3"],
        user={"age": 30.0, "recent": ["7", "8"]},
        items=[{"price": 2.5, "category": "7"}, None, {"category": "9"}],
    )
    assert found.columns(schema) == {
        "user_id": ["u1", "u1", "u1"],
        "age": [30.0, 30.0, 30.0],
        "segment": ["", "", ""],  # not stored: the categorical missing value
        "recent": [["7", "8"]] * 3,
        "item_id": ["i1", "i2", "i3"],
        "price": [2.5, 0.0, 0.0],  # item i2 absent, i3 has no price
        "category": ["7", "", "9"],
    }
    assert not found.missing_user
    assert found.missing_items == ["i2"]
    assert not found.degraded


def test_a_missing_user_gets_the_schema_defaults(schema: Schema) -> None:
    found = OnlineFeatures.from_rows("u9", ["i1"], None, [{"price": 1.0}])
    columns = found.columns(schema)
    assert found.missing_user
    assert columns["user_id"] == ["u9"]
    assert columns["age"] == [-1.0]  # the feature's `default`
    assert columns["recent"] == [[]]


def test_unavailable_is_degraded_with_everything_missing(schema: Schema) -> None:
    found = OnlineFeatures.unavailable("u1", ["i1", "i2"])
    assert found.degraded
    assert found.missing_user
    assert found.missing_items == ["i1", "i2"]
    assert found.columns(schema)["price"] == [0.0, 0.0]
    assert found.columns(schema)["item_id"] == ["i1", "i2"]


def test_no_items_gives_empty_columns(schema: Schema) -> None:
    columns = OnlineFeatures.from_rows("u1", [], {"age": 3.0}, []).columns(schema)
    assert columns["age"] == []
    assert columns["item_id"] == []


def test_columns_are_cut_from_the_arrays_in_their_stored_order(schema: Schema) -> None:
    layout = Layout(user=("recent", "retired", "age"), item=("category", "retired", "price"))
    found = OnlineFeatures(
        "u1",
        ["i1", "i2", "i3"],
        layout,
        [["7"], "x", None],  # age missing: nil
        [["c1", "x", 1.5], None, [None, "x", 2.5]],
    )
    columns = found.columns(schema)  # "retired" is stored but not in the schema: ignored
    assert {name: columns[name] for name in ("age", "recent", "price", "category")} == {
        "age": [-1.0, -1.0, -1.0],
        "recent": [["7"], ["7"], ["7"]],
        "price": [1.5, 0.0, 2.5],
        "category": ["c1", "", ""],
    }
    assert found.user == {"recent": ["7"], "retired": "x"}
    assert found.items[2] == {"retired": "x", "price": 2.5}
