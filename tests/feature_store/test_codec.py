"""The Redis layout: key format and value encoding, pinned byte for byte."""

from __future__ import annotations

import pytest

from feature_store.codec import (
    Layout,
    check_namespace,
    counter_key,
    decode_rows,
    encode_row,
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


def test_values_are_msgpack_arrays_in_column_order_with_float32_numbers_and_nil_if_missing() -> (
    None
):
    columns = ["price", "cat", "seq", "age"]
    blob = encode_row({"seq": ["a", ""], "price": 1.5, "cat": "7"}, columns)
    assert blob == (
        b"\x94"  # array of 4, in the order of `columns`, not of the row
        b"\xca\x3f\xc0\x00\x00"  # float32 1.5
        b"\xa17"
        b"\x92\xa1a\xa0"
        b"\xc0"  # nil: "age" is missing
    )
    keys = [b"k1", b"k2", b"k3"]
    assert decode_rows([blob, None, b"\x90"], keys, [4, 4, 0]) == [
        [1.5, "7", ["a", ""], None],
        None,  # no such key
        [],
    ]


def test_a_feature_outside_the_columns_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"features \['size'\] are not among the columns \['price'\]"
    ):
        encode_row({"price": 1.0, "size": 2.0}, ["price"])


def test_numbers_come_back_at_float32_precision() -> None:
    [row] = decode_rows([encode_row({"x": 0.1}, ["x"])], [b"k"], [1])
    assert row is not None and row[0] != 0.1
    assert row[0] == pytest.approx(0.1, rel=1e-7)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\xc1", "not msgpack"),
        (b"\x93\x01\x02\x03\x04", "not msgpack"),  # an array, then extra bytes
        (b"\x81\xa1x\x01", "is a dict, not an array of the 3 columns"),  # a map: the old format
        (b"\x92\x01\x02", "is a list of 2, not an array of the 3 columns"),
        (b"\x07", "is a int, not an array of the 3 columns"),
    ],
)
def test_foreign_values_raise_naming_the_key(blob: bytes, message: str) -> None:
    good = encode_row({"a": 1.0}, ["a", "b", "c"])
    keys = [b"mtrank:v1:item:1", b"mtrank:v1:item:9"]
    with pytest.raises(CorruptValue, match=f"'mtrank:v1:item:9'.*{message}"):
        decode_rows([good, blob], keys, [3, 3])


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_rows_are_decoded_in_order_whatever_the_count_with_none_where_absent(n: int) -> None:
    # one unpackb of all the values joined under an array header: fixarray, array 16, array 32
    blobs = [None if i % 3 == 1 else encode_row({"a": float(i % 7)}, ["a", "b"]) for i in range(n)]
    keys = [f"k{i}".encode() for i in range(n)]
    assert decode_rows(blobs, keys, [2] * n) == [
        None if i % 3 == 1 else [float(i % 7), None] for i in range(n)
    ]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\xc1", "not msgpack"),
        (b"\x92\x01", "not msgpack"),  # truncated: would swallow the next value if joined
        (b"\x92\x01\x02\x03", "not msgpack"),  # an extra value: would shift the rest if joined
        (b"\x81\xa1x\x01", "is a dict"),
        (b"\x91\x01", "is a list of 1"),
    ],
)
def test_a_foreign_value_among_many_is_named_not_its_neighbours(blob: bytes, message: str) -> None:
    good = encode_row({"a": 1.0}, ["a", "b"])
    blobs: list[bytes | None] = [good] * 500
    blobs[250] = None
    blobs[321] = blob
    keys = [f"mtrank:v1:item:{i}".encode() for i in range(500)]
    with pytest.raises(CorruptValue, match=f"'mtrank:v1:item:321'.*{message}"):
        decode_rows(blobs, keys, [2] * 500)


def test_the_user_row_may_have_another_width_than_the_items() -> None:
    user = encode_row({"age": 3.0}, ["age"])
    item = encode_row({"price": 1.0}, ["price", "category"])
    keys = [b"ns:v1:user:u", b"ns:v1:item:i", b"ns:v1:item:j"]
    assert decode_rows([user, item, None], keys, [1, 2, 2]) == [[3.0], [1.0, None], None]
    with pytest.raises(CorruptValue, match="'ns:v1:item:i' is a list of 1, not an array of the 2"):
        decode_rows([user, user, None], keys, [1, 2, 2])


def test_the_column_order_is_read_from_the_meta_record() -> None:
    meta = b'{"columns": {"item": ["price", "cat"], "user": []}, "version": 7}'
    assert Layout.from_meta(meta, b"mtrank:v7:meta") == Layout(user=(), item=("price", "cat"))
    assert Layout(user=("age",), item=("price",)).to_record() == {
        "user": ["age"],
        "item": ["price"],
    }
    with pytest.raises(CorruptValue, match="'mtrank:v7:meta' is missing"):
        Layout.from_meta(None, b"mtrank:v7:meta")
    with pytest.raises(CorruptValue, match="'mtrank:v7:meta' has no column order"):
        Layout.from_meta(b'{"format": 2, "entities": {}}', b"mtrank:v7:meta")


@pytest.mark.parametrize("bad", ["", "a:b", "a*", "a b", "x?", "a[b]"])
def test_namespaces_that_would_break_keys_or_scan_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="namespace must be"):
        check_namespace(bad)
    assert check_namespace("test-1.a_b") == "test-1.a_b"
