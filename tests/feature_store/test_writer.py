"""Versions on the server: numbers only go up, the flip only moves forward, old versions go."""

from __future__ import annotations

import json

import pytest
import redis

from feature_store.records import Column, Record
from feature_store.writer import StoreWriter, VersionConflict


def _keys(raw_redis: redis.Redis, namespace: str) -> list[bytes]:
    return sorted(set(raw_redis.scan_iter(match=f"{namespace}:*")))  # SCAN may repeat a key


def test_versions_are_handed_out_in_increasing_order_and_flips_return_the_previous(
    writer: StoreWriter,
) -> None:
    assert writer.current_version() is None
    first, second = writer.begin(), writer.begin()
    assert (first, second) == (1, 2)
    assert writer.flip(first) is None
    assert writer.flip(second) == 1
    assert writer.current_version() == 2


def test_a_version_numbered_below_the_live_one_cannot_flip_and_is_discarded(
    writer: StoreWriter, raw_redis: redis.Redis, namespace: str
) -> None:
    older, newer = writer.begin(), writer.begin()
    writer.write(older, "item", [("i1", {})])
    writer.flip(newer)
    with pytest.raises(VersionConflict, match=f"already serves version {newer}, newer than 1"):
        writer.flip(older)
    assert writer.current_version() == newer
    assert _keys(raw_redis, namespace) == [
        f"{namespace}:current".encode(),
        f"{namespace}:v{newer}:meta".encode(),
        f"{namespace}:version".encode(),
    ]


def test_a_lost_counter_never_hands_out_a_version_at_or_below_the_live_one(
    writer: StoreWriter, raw_redis: redis.Redis, namespace: str
) -> None:
    writer.flip(5)
    raw_redis.delete(f"{namespace}:version")
    assert writer.begin() == 6


def test_deleting_older_versions_keeps_the_live_and_newer_ones(
    writer: StoreWriter, raw_redis: redis.Redis, namespace: str
) -> None:
    for version in (1, 2, 3):
        writer.write(version, "user", [(f"u{n}", {}) for n in range(1500)])  # two batches
        writer.write_metadata(version, {"version": version})
    assert writer.delete_versions_below(2) == 1501
    assert {k.split(b":")[1] for k in _keys(raw_redis, namespace)} == {b"v2", b"v3"}
    assert writer.discard(3) == 1501
    assert {k.split(b":")[1] for k in _keys(raw_redis, namespace)} == {b"v2"}


def test_rows_written_with_a_ttl_expire(
    writer: StoreWriter, raw_redis: redis.Redis, namespace: str
) -> None:
    writer.write(1, "item", [("i1", {"price": 1.0})], ttl_s=100)
    writer.write(1, "item", [("i2", {"price": 1.0})])
    assert 0 < raw_redis.ttl(f"{namespace}:v1:item:i1") <= 100
    assert raw_redis.ttl(f"{namespace}:v1:item:i2") == -1  # no expiry


def test_a_version_flipped_to_without_metadata_gets_its_record_layout_recorded(
    writer: StoreWriter, raw_redis: redis.Redis, namespace: str
) -> None:
    version = writer.begin()
    writer.write(version, "item", [("i1", {"price": 1.0})])
    assert raw_redis.get(f"{namespace}:v1:meta") is None
    writer.flip(version)
    assert json.loads(raw_redis.get(f"{namespace}:v1:meta")) == {
        "version": 1,
        "columns": {"user": [], "item": [{"name": "price", "type": "numeric"}]},
    }
    writer.write_metadata(2, {"rows": 0})
    writer.flip(2)  # a record that exists is left as it is
    assert json.loads(raw_redis.get(f"{namespace}:v2:meta")) == {
        "rows": 0,
        "columns": {"user": [], "item": []},
    }


def test_rows_are_records_in_the_layout_the_metadata_records(
    writer: StoreWriter, raw_redis: redis.Redis, namespace: str
) -> None:
    items = Record(
        (
            Column("price", "numeric"),
            Column("category", "categorical", width=2),
            Column("tags", "sequence", width=1, length=2),
        )
    )
    writer.write(1, "item", [("i1", {"tags": ["a"], "price": 1.5})], record=items)
    writer.write(1, "item", [("i2", {"category": "7"})])  # the record stays as first written
    writer.write(1, "user", [("u1", {"age": 3.0}), ("u2", {"segment": "bc", "age": 4.0})])
    writer.write_metadata(1, {"format": 4})
    record = json.loads(raw_redis.get(f"{namespace}:v1:meta"))
    assert record == {
        "format": 4,
        "columns": {
            "user": [
                {"name": "age", "type": "numeric"},
                {"name": "segment", "type": "categorical", "width": 2},  # inferred from the rows
            ],
            "item": [
                {"name": "price", "type": "numeric"},
                {"name": "category", "type": "categorical", "width": 2},
                {"name": "tags", "type": "sequence", "width": 1, "length": 2},
            ],
        },
    }
    nan = b"\x00\x00\xc0\x7f"
    assert raw_redis.get(f"{namespace}:v1:item:i1") == b"\x00\x00\xc0\x3f" + b"\0\0" + b"a\0"
    assert raw_redis.get(f"{namespace}:v1:item:i2") == nan + b"7\0" + b"\0\0"
    assert raw_redis.get(f"{namespace}:v1:user:u1") == b"\x00\x00\x40\x40" + b"\0\0"
    other = Record((Column("price", "numeric"),))
    with pytest.raises(ValueError, match=r"version 1 stores item records \[\{'name': 'price'"):
        writer.write(1, "item", [("i3", {})], record=other)
    with pytest.raises(ValueError, match=r"features \['size'\] are not among the columns"):
        writer.write(1, "item", [("i3", {"size": 1.0})])
