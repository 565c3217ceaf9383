"""OnlineFeatures: what serving gets back from a lookup, defaults filled in."""

from __future__ import annotations

from feature_store.store import OnlineFeatures
from ranker.schema import Schema


def test_columns_fill_defaults_and_take_keys_from_the_request(schema: Schema) -> None:
    found = OnlineFeatures(
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
    found = OnlineFeatures("u9", ["i1"], None, [{"price": 1.0}])
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
    columns = OnlineFeatures("u1", [], {"age": 3.0}, []).columns(schema)
    assert columns["age"] == []
    assert columns["item_id"] == []
