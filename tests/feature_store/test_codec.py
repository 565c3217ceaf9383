"""The Redis layout: key format and value encoding, pinned byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from feature_store.codec import (
    Column,
    Layout,
    Record,
    check_namespace,
    counter_key,
    entity_key,
    entity_prefix,
    key_version,
    meta_key,
    parse_version,
    pointer_key,
    version_prefix,
    versions_pattern,
)
from feature_store.errors import CorruptValue


def test_keys_are_namespace_version_entity_id() -> None:
    assert entity_key("mtrank", 7, "user", "u42") == b"mtrank:v7:user:u42"
    assert entity_key("mtrank", 12, "item", "1007") == b"mtrank:v12:item:1007"
    assert entity_key("shop-eu", 1, "item", "caf\u00e9:1") == b"shop-eu:v1:item:caf\xc3\xa9:1"
    assert entity_prefix("mtrank", 7, "item") == b"mtrank:v7:item:"
    assert version_prefix("mtrank", 7) == b"mtrank:v7:"
    assert meta_key("mtrank", 7) == b"mtrank:v7:meta"
    assert pointer_key("mtrank") == b"mtrank:current"
    assert counter_key("mtrank") == b"mtrank:version"
    assert versions_pattern("mtrank") == b"mtrank:v[0-9]*:*"


def test_the_version_of_a_key_is_read_back_and_other_keys_have_none() -> None:
    assert key_version("mtrank", b"mtrank:v12:item:v3:x") == 12
    assert key_version("mtrank", b"mtrank:v12:meta") == 12
    assert key_version("mtrank", b"mtrank:version") is None
    assert key_version("mtrank", b"mtrank:current") is None
    assert key_version("mtrank", b"mtrank2:v1:item:x") is None
    assert key_version("mtrank", b"mtrank:vx:item:x") is None


def test_the_pointer_holds_a_decimal_version() -> None:
    assert parse_version(b"7", b"ns:current") == 7
    assert parse_version(None, b"ns:current") is None
    with pytest.raises(CorruptValue, match="'ns:current' is not a version"):
        parse_version(b"v7", b"ns:current")


def test_values_are_fixed_size_records_in_column_order_pinned_byte_for_byte() -> None:
    record = Record(
        (
            Column("price", "numeric"),
            Column("cat", "categorical", width=3),
            Column("seq", "sequence", width=2, length=3),
            Column("age", "numeric"),
        )
    )
    [blob] = record.encode([{"seq": ["a", "", "bc"], "price": 1.5, "cat": "7"}])
    assert blob == (
        b"\x00\x00\xc0\x3f"  # float32 1.5, little-endian, first: the order of the columns
        b"7\x00\x00"  # UTF-8, NUL-padded to the width
        b"a\x00bc\x00\x00"  # non-empty elements first, then "" (all NUL)
        b"\x00\x00\xc0\x7f"  # NaN: "age" is missing
    )
    assert record.size == len(blob) == 4 + 3 + 6 + 4
    keys = [b"k1", b"k2"]
    rows = record.decode([blob, None], keys)
    assert [record.values(row) for row in rows] == [
        {"price": 1.5, "cat": "7", "seq": ["a", "bc"]},
        {},  # no such key: every value missing
    ]
    assert rows["cat"].tolist() == [b"7", b""]
    assert rows["seq"].tolist() == [[b"a", b"bc", b""], [b"", b"", b""]]


def test_the_record_is_inferred_from_rows_as_the_smallest_that_holds_them() -> None:
    rows = [{"cat": "caf\u00e9", "n": 1}, {"seq": ["x", "", "yz"], "n": 2.5}, {"cat": None}]
    assert Record.infer(rows) == Record(
        (
            Column("cat", "categorical", width=5),  # UTF-8 bytes, not characters
            Column("n", "numeric"),
            Column("seq", "sequence", width=2, length=2),
        )
    )
    with pytest.raises(ValueError, match="feature 'n' has numeric and categorical values"):
        Record.infer([{"n": 1.0}, {"n": "1"}])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"price": 1.0, "size": 2.0}, r"features \['size'\] are not among the columns"),
        ({"cat": "abcd"}, "'abcd' takes 4 bytes, more than the 3 its records hold"),
        ({"cat": "a\x00"}, "contains NUL"),
        ({"cat": 7}, "column 'cat' holds strings, got 7"),
        ({"price": "1"}, "column 'price' is numeric, got '1'"),
        ({"seq": ["a", "b", "c"]}, "column 'seq' holds 2 elements, got 3"),
        ({"seq": "ab"}, "column 'seq' holds lists of strings"),
    ],
)
def test_a_row_the_record_cannot_hold_is_refused_naming_the_column(
    row: dict[str, Any], message: str
) -> None:
    record = Record(
        (
            Column("price", "numeric"),
            Column("cat", "categorical", width=3),
            Column("seq", "sequence", width=1, length=2),
        )
    )
    with pytest.raises(ValueError, match=message):
        record.encode([row])


def test_columns_need_the_sizes_of_their_type() -> None:
    with pytest.raises(ValueError, match="a categorical column needs a width >= 1"):
        Column("cat", "categorical")
    with pytest.raises(ValueError, match="a sequence column needs a width >= 1 and a length"):
        Column("seq", "sequence", width=2)
    with pytest.raises(ValueError, match="a numeric column needs no width"):
        Column("n", "numeric", width=4)


def test_numbers_come_back_at_float32_precision() -> None:
    record = Record((Column("x", "numeric"),))
    [row] = record.decode(record.encode([{"x": 0.1}]), [b"k"])
    assert record.values(row)["x"] != 0.1
    assert record.values(row)["x"] == pytest.approx(0.1, rel=1e-7)


@pytest.mark.parametrize("n", [0, 1, 500])
def test_records_are_decoded_in_order_with_missing_values_where_absent(n: int) -> None:
    record = Record((Column("a", "numeric"), Column("b", "categorical", width=2)))
    blobs = [None if i % 3 == 1 else record.encode([{"a": float(i % 7)}])[0] for i in range(n)]
    keys = [f"k{i}".encode() for i in range(n)]
    rows = record.decode(blobs, keys)
    assert [record.values(row) for row in rows] == [
        {} if i % 3 == 1 else {"a": float(i % 7)} for i in range(n)
    ]


@pytest.mark.parametrize(
    ("blob", "size"),
    [
        (b"\x00\x00\x80\x3f\x61", 5),  # one byte short
        (b"\x00\x00\x80\x3f\x61\x00\x00", 7),  # one byte more: would shift the rest if joined
        (b"", 0),
        (b"\x92\x01\x02", 3),  # a msgpack array: written by an older mtrank
    ],
)
def test_a_value_of_another_size_among_many_is_named_not_its_neighbours(
    blob: bytes, size: int
) -> None:
    record = Record((Column("a", "numeric"), Column("b", "categorical", width=2)))
    [good] = record.encode([{"a": 1.0}])
    blobs: list[bytes | None] = [good] * 500
    blobs[250] = None
    blobs[321] = blob
    keys = [f"mtrank:v1:item:{i}".encode() for i in range(500)]
    message = f"'mtrank:v1:item:321' is {size} bytes, not a record of this version \\(6 bytes: a, b"
    with pytest.raises(CorruptValue, match=message):
        record.decode(blobs, keys)


def test_a_record_of_no_columns_is_empty() -> None:
    record = Record()
    assert record.size == 0
    assert len(record.decode([b"", None], [b"k1", b"k2"])) == 2


def test_the_record_layout_is_read_from_the_meta_record() -> None:
    meta = (
        b'{"columns": {"item": [{"name": "price", "type": "numeric"}, '
        b'{"name": "cat", "type": "categorical", "width": 4}], "user": []}, "version": 7}'
    )
    item = Record((Column("price", "numeric"), Column("cat", "categorical", width=4)))
    assert Layout.from_meta(meta, b"mtrank:v7:meta") == Layout(user=Record(), item=item)
    assert Layout(item=item).to_record() == {
        "user": [],
        "item": [
            {"name": "price", "type": "numeric"},
            {"name": "cat", "type": "categorical", "width": 4},
        ],
    }
    with pytest.raises(CorruptValue, match="'mtrank:v7:meta' is missing"):
        Layout.from_meta(None, b"mtrank:v7:meta")
    with pytest.raises(CorruptValue, match="'mtrank:v7:meta' has no record layout"):
        Layout.from_meta(b'{"format": 2, "entities": {}}', b"mtrank:v7:meta")
    with pytest.raises(CorruptValue, match="written by an older mtrank"):  # format 3: names only
        Layout.from_meta(b'{"columns": {"item": ["price"], "user": []}}', b"mtrank:v7:meta")


@pytest.mark.parametrize("bad", ["", "a:b", "a*", "a b", "x?", "a[b]"])
def test_namespaces_that_would_break_keys_or_scan_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="namespace must be"):
        check_namespace(bad)
    assert check_namespace("test-1.a_b") == "test-1.a_b"
