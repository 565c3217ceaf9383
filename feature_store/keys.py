"""How entities are laid out in Redis: versioned tables, one key per entity, one fixed-size record each.

Key format, pinned byte for byte by the tests (change it only together with a migration)::

    {namespace}:current                     the live version N, in ASCII decimal: b"7"
    {namespace}:version                     INCR counter that hands out version numbers
    {namespace}:v{N}:user:{user_id}         e.g. b"mtrank:v7:user:u42"
    {namespace}:v{N}:item:{item_id}         e.g. b"mtrank:v7:item:1007"
    {namespace}:v{N}:meta                   JSON: what version N holds, its record layouts

A materialization writes version N = INCR {namespace}:version, then sets {namespace}:current to N
(a compare-and-set that only moves forward), then deletes every older version. Readers resolve
`current` in the same round trip as their MGET, so they never see a half-written version.
A Redis Cluster holds the same keys, spread over its hash slots (no hash tags); how its readers
keep versions apart without a transaction: `feature_store.cluster_store`.

The records stored under the entity keys: `feature_store.records`.
"""

from __future__ import annotations

import re
from typing import Literal

from feature_store.errors import CorruptValue

StoredEntity = Literal["user", "item"]

DEFAULT_NAMESPACE = "mtrank"
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_namespace(namespace: str) -> str:
    """Return `namespace` if it can prefix keys and SCAN patterns safely, else raise ValueError."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"namespace must be letters, digits, '_', '.' or '-', got {namespace!r}")
    return namespace


def pointer_key(namespace: str) -> bytes:
    """The key holding the live version number: b"{namespace}:current"."""
    return f"{namespace}:current".encode()


def counter_key(namespace: str) -> bytes:
    """The counter that hands out version numbers: b"{namespace}:version"."""
    return f"{namespace}:version".encode()


def version_prefix(namespace: str, version: int) -> bytes:
    """The bytes every key of one version starts with: b"{namespace}:v{version}:"."""
    return f"{namespace}:v{version}:".encode()


def versions_pattern(namespace: str) -> bytes:
    """A SCAN pattern matching the keys of every version of `namespace`."""
    return f"{namespace}:v[0-9]*:*".encode()


def key_version(namespace: str, key: bytes) -> int | None:
    """The N of a key b"{namespace}:v{N}:...", or None if `key` is not a versioned key."""
    head = f"{namespace}:v".encode()
    if not key.startswith(head):
        return None
    digits, sep, _ = key[len(head) :].partition(b":")
    return int(digits) if sep and digits.isdigit() else None


def entity_prefix(namespace: str, version: int, entity: StoredEntity) -> bytes:
    """The bytes every key of `entity` in `version` starts with: b"{namespace}:v{N}:{entity}:"."""
    return version_prefix(namespace, version) + f"{entity}:".encode()


def entity_key(namespace: str, version: int, entity: StoredEntity, entity_id: str) -> bytes:
    """The Redis key of one entity: b"{namespace}:v{N}:{entity}:{entity_id}" (id in UTF-8)."""
    return entity_prefix(namespace, version, entity) + entity_id.encode()


def meta_key(namespace: str, version: int) -> bytes:
    """The key of the materialization record of one version: b"{namespace}:v{N}:meta"."""
    return version_prefix(namespace, version) + b"meta"


def parse_version(blob: bytes | str | None, key: bytes) -> int | None:
    """The version stored at the pointer key (None when nothing was ever flipped)."""
    if blob is None:
        return None
    if not blob.isdigit():
        raise CorruptValue(f"value at {key_name(key)!r} is not a version: {blob!r}")
    return int(blob)


def key_name(key: bytes) -> str:
    return key.decode(errors="replace")
