"""The Redis key format, pinned byte for byte."""

from __future__ import annotations

import pytest

from feature_store.errors import CorruptValue
from feature_store.keys import (
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


@pytest.mark.parametrize("bad", ["", "a:b", "a*", "a b", "x?", "a[b]"])
def test_namespaces_that_would_break_keys_or_scan_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="namespace must be"):
        check_namespace(bad)
    assert check_namespace("test-1.a_b") == "test-1.a_b"
