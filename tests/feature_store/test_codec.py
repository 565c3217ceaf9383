"""The Redis layout: key format and value encoding, pinned byte for byte."""

from __future__ import annotations

import pytest

from feature_store.codec import (
    check_namespace,
    decode_row,
    encode_row,
    entity_key,
    entity_prefix,
    meta_key,
)
from feature_store.errors import CorruptValue


def test_keys_are_namespace_entity_id() -> None:
    assert entity_key("mtrank", "user", "u42") == b"mtrank:user:u42"
    assert entity_key("mtrank", "item", "1007") == b"mtrank:item:1007"
    assert entity_key("shop-eu", "item", "caf\u00e9:1") == b"shop-eu:item:caf\xc3\xa9:1"
    assert entity_prefix("mtrank", "item") == b"mtrank:item:"
    assert meta_key("mtrank") == b"mtrank:meta"


def test_values_are_msgpack_maps_with_float32_numbers() -> None:
    blob = encode_row({"price": 1.5, "cat": "7", "seq": ["a", ""]})
    assert blob == (
        b"\x83"  # map of 3
        b"\xa5price\xca\x3f\xc0\x00\x00"  # float32 1.5
        b"\xa3cat\xa17"
        b"\xa3seq\x92\xa1a\xa0"
    )
    assert decode_row(blob, b"k") == {"price": 1.5, "cat": "7", "seq": ["a", ""]}


def test_numbers_come_back_at_float32_precision() -> None:
    row = decode_row(encode_row({"x": 0.1}), b"k")
    assert row["x"] != 0.1
    assert row["x"] == pytest.approx(0.1, rel=1e-7)


@pytest.mark.parametrize(
    ("blob", "message"),
    [(b"\xc1", "not msgpack"), (b"\x93\x01\x02\x03", "is a list, not a feature map")],
)
def test_foreign_values_raise_naming_the_key(blob: bytes, message: str) -> None:
    with pytest.raises(CorruptValue, match=f"'mtrank:item:9'.*{message}"):
        decode_row(blob, b"mtrank:item:9")


@pytest.mark.parametrize("bad", ["", "a:b", "a*", "a b", "x?"])
def test_namespaces_that_would_break_keys_or_scan_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="namespace must be"):
        check_namespace(bad)
    assert check_namespace("test-1.a_b") == "test-1.a_b"
