"""Materialization: the store mirrors users.parquet and items.parquet, or nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from feature_store.errors import DataFileError
from feature_store.materialize import materialize
from feature_store.redis_store import RedisOnlineStore
from ranker.schema import Schema

pytestmark = pytest.mark.redis

MakeDir = Callable[..., Path]


def test_rows_are_stored_in_the_raw_conventions(
    store: RedisOnlineStore, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    data = make_data_dir(tmp_path / "data")
    reports = materialize(store, data, schema)
    assert [(r.entity, r.rows, r.stale_deleted) for r in reports] == [
        ("user", 3, 0),
        ("item", 2, 0),
    ]
    # integer ids become str(), nulls and NaN are left out, sequences become lists of strings
    assert store.read("user", ["1", "2", "3"]) == [
        {"age": 30.0, "segment": "a", "recent": ["7", "8"]},
        {"segment": "b"},
        {"age": 41.5, "recent": []},
    ]
    price = store.read("item", ["i1"])[0]
    assert price == {"price": pytest.approx(0.1, rel=1e-7), "category": "7"}
    assert store.read("item", ["i2"]) == [{}]


def test_the_metadata_record_says_what_was_loaded(
    store: RedisOnlineStore, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    data = make_data_dir(tmp_path / "data")
    materialize(store, data, schema)
    record = store.metadata()
    assert record is not None
    assert record["entities"]["user"] == {
        "file": str((data / "users.parquet").resolve()),
        "key": "user_id",
        "rows": 3,
        "features": ["age", "segment", "recent"],
    }
    assert record["entities"]["item"]["rows"] == 2


def test_rematerializing_deletes_entities_no_longer_in_the_files(
    store: RedisOnlineStore, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    materialize(store, make_data_dir(tmp_path / "old"), schema)
    new = make_data_dir(
        tmp_path / "new",
        users={"user_id": [3, 4], "age": [1.0, 2.0], "segment": ["x", "y"], "recent": [[], []]},
    )
    reports = materialize(store, new, schema)
    assert reports[0].stale_deleted == 2
    assert sorted(store.entity_ids("user")) == ["3", "4"]
    assert store.read("user", ["3"]) == [{"age": 1.0, "segment": "x", "recent": []}]


def test_keep_stale_keeps_them(
    store: RedisOnlineStore, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    materialize(store, make_data_dir(tmp_path / "old"), schema)
    new = make_data_dir(
        tmp_path / "new", users={"user_id": [9], "age": [1.0], "segment": ["x"], "recent": [[]]}
    )
    materialize(store, new, schema, delete_stale=False)
    assert sorted(store.entity_ids("user")) == ["1", "2", "3", "9"]


@pytest.mark.parametrize(
    ("users", "message"),
    [
        (
            {"user_id": [1, 2], "age": [1.0, 2.0], "recent": [[], []]},
            r"users.parquet: no column 'segment' \(user feature in the schema\); columns are "
            r"\['user_id', 'age', 'recent'\]",
        ),
        (
            {"uid": [1], "age": [1.0], "segment": ["a"], "recent": [[]]},
            r"users.parquet: no column 'user_id' \(key in the schema\)",
        ),
        (
            {
                "user_id": [1, 2, 1, 2, 1],
                "age": [1.0] * 5,
                "segment": ["a"] * 5,
                "recent": [[]] * 5,
            },
            r"users.parquet: user_id '1' appears 3 times; each user_id needs exactly one row",
        ),
        (
            {"user_id": ["a", None], "age": [1.0, 2.0], "segment": ["a", "b"], "recent": [[], []]},
            r"users.parquet: column 'user_id' has 1 empty ids \(first at row 1\)",
        ),
        (
            {"user_id": [1], "age": ["old"], "segment": ["a"], "recent": [[]]},
            r"users.parquet: column 'age' is numeric in the schema, so it must hold numbers",
        ),
    ],
)
def test_bad_files_are_refused_before_anything_is_written(
    store: RedisOnlineStore,
    schema: Schema,
    make_data_dir: MakeDir,
    tmp_path: Path,
    users: dict[str, list[object]],
    message: str,
) -> None:
    data = make_data_dir(tmp_path / "data", users=users)
    with pytest.raises(DataFileError, match=message):
        materialize(store, data, schema)
    assert store.entity_ids("item") == []  # items.parquet was fine, but is not half-loaded
    assert store.metadata() is None


def test_a_bad_items_file_stops_the_users_from_being_loaded_too(
    store: RedisOnlineStore, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    data = make_data_dir(
        tmp_path / "data", items={"item_id": ["i1"], "price": [[1.0]], "category": [1]}
    )
    with pytest.raises(DataFileError, match=r"items.parquet: column 'price' is numeric"):
        materialize(store, data, schema)
    assert store.entity_ids("user") == []


def test_a_missing_file_is_named(
    store: RedisOnlineStore, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    data = make_data_dir(tmp_path / "data", items={})
    with pytest.raises(DataFileError, match=r"items.parquet: no such file \(the schema has item"):
        materialize(store, data, schema)


def test_entities_without_features_in_the_schema_need_no_file(
    store: RedisOnlineStore, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    only_items = {
        "features": [
            {"name": "item_id", "type": "categorical", "entity": "item", "num_buckets": 10},
            {"name": "price", "type": "numeric", "entity": "item"},
        ],
        "tasks": [{"name": "ctr", "label": "click"}],
    }
    data = make_data_dir(
        tmp_path / "data", users={}, items={"item_id": [5], "price": [1.0]}, schema=only_items
    )
    reports = materialize(store, data, Schema.from_dict(only_items))
    assert [r.entity for r in reports] == ["item"]
    assert store.read("item", ["5"]) == [{"price": 1.0}]
