"""Materialization: a new version mirrors users.parquet and items.parquet, or readers keep the old.

Readers must never see a half-loaded table: a materialization that fails, or is killed, leaves
them on the previous complete version, and the next one cleans up what it left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis

from feature_store.errors import DataFileError
from feature_store.materialize import materialize
from feature_store.online_features import OnlineFeatures
from feature_store.redis_store import RedisOnlineStore
from feature_store.writer import StoreWriter
from ranker.schema import Schema

MakeDir = Callable[..., Path]
Reader = Callable[..., RedisOnlineStore]


def _lookups(reader: Reader, requests: Sequence[tuple[str, list[str]]]) -> list[OnlineFeatures]:
    async def scenario() -> list[OnlineFeatures]:
        async with reader() as store:
            return [await store.get_online_features(u, items) for u, items in requests]

    return asyncio.run(scenario())


def _users(reader: Reader, ids: list[str]) -> list[object]:
    return [found.user for found in _lookups(reader, [(i, []) for i in ids])]


def _items(reader: Reader, ids: list[str]) -> list[object]:
    return list(_lookups(reader, [("nobody", ids)])[0].items)


def _versions(raw_redis: redis.Redis, namespace: str) -> set[bytes]:
    """The `vN` parts of the namespace's versioned keys."""
    keys = raw_redis.scan_iter(match=f"{namespace}:v[0-9]*:*", count=1000)
    return {key.split(b":")[1] for key in keys}


def test_rows_are_stored_in_the_raw_conventions(
    writer: StoreWriter, reader: Reader, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    done = materialize(writer, make_data_dir(tmp_path / "data"), schema)
    assert (done.version, done.previous, done.deleted_keys) == (1, None, 0)
    assert [(r.entity, r.rows) for r in done.entities] == [("user", 3), ("item", 2)]
    # integer ids become str(), nulls and NaN are left out, sequences become lists of strings
    # (an empty one reads as missing: the model's missing value for a sequence is [])
    assert _users(reader, ["1", "2", "3"]) == [
        {"age": 30.0, "segment": "a", "recent": ["7", "8"]},
        {"segment": "b"},
        {"age": 41.5},
    ]
    assert _items(reader, ["i1", "i2"]) == [
        {"price": pytest.approx(0.1, rel=1e-7), "category": "7"},
        {},
    ]


def test_records_are_sized_to_the_longest_values_and_sequences_cut_to_max_length(
    writer: StoreWriter, reader: Reader, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    users = {
        "user_id": ["1", "2"],
        "age": [1.0, 2.0],
        "segment": ["caf\u00e9", "b"],  # 5 bytes in UTF-8
        "recent": [["1", "", "22", "333", "4444"], ["5"]],  # max_length 3: the first 3 non-empty
    }
    materialize(writer, make_data_dir(tmp_path / "data", users=users), schema)
    assert writer.layout(1).user.to_record() == [
        {"name": "age", "type": "numeric"},
        {"name": "segment", "type": "categorical", "width": 5},
        {"name": "recent", "type": "sequence", "width": 3, "length": 3},
    ]
    assert _users(reader, ["1", "2"]) == [
        {"age": 1.0, "segment": "caf\u00e9", "recent": ["1", "22", "333"]},
        {"age": 2.0, "segment": "b", "recent": ["5"]},
    ]


def test_the_metadata_record_says_what_was_loaded(
    writer: StoreWriter, reader: Reader, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    data = make_data_dir(tmp_path / "data")
    materialize(writer, data, schema)

    async def metadata() -> dict[str, object] | None:
        async with reader() as store:
            return await store.metadata()

    record = asyncio.run(metadata())
    assert record is not None
    assert (record["version"], record["format"]) == (1, 4)
    # the stored records, sized to the longest values: what readers decode rows with
    assert record["columns"] == {
        "user": [
            {"name": "age", "type": "numeric"},
            {"name": "segment", "type": "categorical", "width": 1},
            {"name": "recent", "type": "sequence", "width": 1, "length": 2},
        ],
        "item": [
            {"name": "price", "type": "numeric"},
            {"name": "category", "type": "categorical", "width": 1},
        ],
    }
    assert record["entities"] == {
        "user": {
            "file": str((data / "users.parquet").resolve()),
            "key": "user_id",
            "rows": 3,
            "features": ["age", "segment", "recent"],
        },
        "item": {
            "file": str((data / "items.parquet").resolve()),
            "key": "item_id",
            "rows": 2,
            "features": ["price", "category"],
        },
    }


def test_rematerializing_replaces_the_table_and_deletes_the_old_version(
    writer: StoreWriter,
    reader: Reader,
    raw_redis: redis.Redis,
    namespace: str,
    schema: Schema,
    make_data_dir: MakeDir,
    tmp_path: Path,
) -> None:
    materialize(writer, make_data_dir(tmp_path / "old"), schema)
    new = make_data_dir(
        tmp_path / "new",
        users={"user_id": [3, 4], "age": [1.0, 2.0], "segment": ["x", "y"], "recent": [[], []]},
    )
    done = materialize(writer, new, schema)
    assert (done.version, done.previous, done.deleted_keys) == (2, 1, 3 + 2 + 1)  # rows + meta
    assert _users(reader, ["1", "3", "4"]) == [
        None,  # no longer in the file
        {"age": 1.0, "segment": "x"},
        {"age": 2.0, "segment": "y"},
    ]
    assert _versions(raw_redis, namespace) == {b"v2"}


def test_running_it_twice_on_the_same_files_leaves_the_same_rows(
    writer: StoreWriter,
    raw_redis: redis.Redis,
    namespace: str,
    schema: Schema,
    make_data_dir: MakeDir,
    tmp_path: Path,
) -> None:
    data = make_data_dir(tmp_path / "data")
    materialize(writer, data, schema)
    first = {
        k.replace(b":v1:", b":vN:"): raw_redis.get(k)
        for k in raw_redis.keys(f"{namespace}:v[0-9]*")
    }
    materialize(writer, data, schema)
    second = {
        k.replace(b":v2:", b":vN:"): raw_redis.get(k)
        for k in raw_redis.keys(f"{namespace}:v[0-9]*")
    }
    meta = f"{namespace}:vN:meta".encode()
    first.pop(meta), second.pop(meta)  # records the time and version
    assert first == second
    assert len(first) == 5


def test_a_failure_between_batches_leaves_readers_on_the_previous_version(
    writer: StoreWriter,
    reader: Reader,
    raw_redis: redis.Redis,
    namespace: str,
    schema: Schema,
    make_data_dir: MakeDir,
    tmp_path: Path,
) -> None:
    materialize(writer, make_data_dir(tmp_path / "old"), schema)
    new = make_data_dir(
        tmp_path / "new",
        users={"user_id": [1], "age": [99.0], "segment": ["z"], "recent": [[]]},
    )

    def fail_after_the_users(entity: str, done: int, total: int) -> None:
        if entity == "item":  # the users of version 2 are written by now
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        materialize(writer, new, schema, progress=fail_after_the_users)
    assert writer.current_version() == 1
    assert _users(reader, ["1", "2"]) == [
        {"age": 30.0, "segment": "a", "recent": ["7", "8"]},
        {"segment": "b"},
    ]
    assert _versions(raw_redis, namespace) == {b"v1"}  # the partial version 2 was deleted


def test_a_materialization_killed_halfway_leaves_readers_on_the_previous_version(
    writer: StoreWriter,
    reader: Reader,
    raw_redis: redis.Redis,
    redis_url: str,
    namespace: str,
    schema: Schema,
    make_data_dir: MakeDir,
    tmp_path: Path,
) -> None:
    old = make_data_dir(tmp_path / "old")
    materialize(writer, old, schema)
    n = 60_000  # six batches of users, six of items: seconds of writing to kill it in
    big = make_data_dir(
        tmp_path / "big",
        users={
            "user_id": [str(i) for i in range(1, n + 1)],
            "age": [float(i) for i in range(n)],
            "segment": ["new"] * n,
            "recent": [["1"]] * n,
        },
        items={"item_id": [f"i{i}" for i in range(n)], "price": [9.0] * n, "category": [1] * n},
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    command = [sys.executable, "-m", "training.cli", "features", "materialize"]
    command += ["--data", str(big), "--redis", redis_url, "--namespace", namespace]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_new_row = f"{namespace}:v2:user:1"
    deadline = time.monotonic() + 60
    while not raw_redis.exists(first_new_row):  # its first batch of version 2 is in
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        assert time.monotonic() < deadline, "the materialization never started writing"
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait()
    if child.stderr:
        child.stderr.close()

    written = len(set(raw_redis.scan_iter(match=f"{namespace}:v2:*", count=5000)))  # may repeat
    assert 0 < written < 2 * n, written  # killed halfway: version 2 exists, incomplete
    assert writer.current_version() == 1
    found = _lookups(reader, [("1", ["i1", "i59999"]), ("59999", [])])
    assert found[0].user == {"age": 30.0, "segment": "a", "recent": ["7", "8"]}
    assert found[0].items == [{"price": pytest.approx(0.1, rel=1e-7), "category": "7"}, None]
    assert found[1].missing_user

    done = materialize(writer, old, schema)  # the next one succeeds, and removes version 2
    assert (done.version, done.previous) == (3, 1)
    assert done.deleted_keys == written + 3 + 2 + 1
    assert _versions(raw_redis, namespace) == {b"v3"}


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
    writer: StoreWriter,
    raw_redis: redis.Redis,
    namespace: str,
    schema: Schema,
    make_data_dir: MakeDir,
    tmp_path: Path,
    users: dict[str, list[object]],
    message: str,
) -> None:
    data = make_data_dir(tmp_path / "data", users=users)
    with pytest.raises(DataFileError, match=message):
        materialize(writer, data, schema)
    assert list(raw_redis.scan_iter(match=f"{namespace}:*")) == []  # not even a version number


def test_a_bad_items_file_stops_the_users_from_being_loaded_too(
    writer: StoreWriter,
    raw_redis: redis.Redis,
    namespace: str,
    schema: Schema,
    make_data_dir: MakeDir,
    tmp_path: Path,
) -> None:
    data = make_data_dir(
        tmp_path / "data", items={"item_id": ["i1"], "price": [[1.0]], "category": [1]}
    )
    with pytest.raises(DataFileError, match=r"items.parquet: column 'price' is numeric"):
        materialize(writer, data, schema)
    assert list(raw_redis.scan_iter(match=f"{namespace}:*")) == []


def test_a_missing_file_is_named(
    writer: StoreWriter, schema: Schema, make_data_dir: MakeDir, tmp_path: Path
) -> None:
    data = make_data_dir(tmp_path / "data", items={})
    with pytest.raises(DataFileError, match=r"items.parquet: no such file \(the schema has item"):
        materialize(writer, data, schema)


def test_entities_without_features_in_the_schema_need_no_file(
    writer: StoreWriter, reader: Reader, make_data_dir: MakeDir, tmp_path: Path
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
    done = materialize(writer, data, Schema.from_dict(only_items))
    assert [r.entity for r in done.entities] == ["item"]
    assert _items(reader, ["5"]) == [{"price": 1.0}]
