"""Writing versions of the online tables: what materialization does to Redis (blocking redis-py).

A materialization `begin`s a new version, `write`s every row into it, records its metadata (with
the record layout the rows were written in, which readers decode them by), and `flip`s the pointer:
a Lua compare-and-set that moves `{namespace}:current` only forward (recording the record layout
first if no metadata was written), so of two materializations racing, the later-numbered one wins
and the other's rows are discarded, never served. After a flip every older version is deleted:
the one readers left, and any version an interrupted materialization left half-written. Layout:
`feature_store.keys` and `feature_store.records`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.cluster

from feature_store.connection import Endpoint, locate
from feature_store.embedded import EmbeddedRedis
from feature_store.errors import FeatureStoreError, StoreUnavailable
from feature_store.keys import (
    DEFAULT_NAMESPACE,
    StoredEntity,
    check_namespace,
    counter_key,
    entity_prefix,
    key_version,
    meta_key,
    parse_version,
    pointer_key,
    version_prefix,
    versions_pattern,
)
from feature_store.records import Layout, Record, Row

T = TypeVar("T")

DEFAULT_WRITE_TIMEOUT_S = 60.0
WRITE_BATCH = 1000

# KEYS: counter, pointer. A new version number, above the live one even if the counter was lost.
_BEGIN = """
local n = redis.call('INCR', KEYS[1])
local live = tonumber(redis.call('GET', KEYS[2]) or '0')
if n <= live then
  n = live + 1
  redis.call('SET', KEYS[1], n)
end
return n
"""

# KEYS: pointer, the version's meta record; ARGV: version, a meta record to store if it has none.
# Sets the pointer unless it is already at or past the version;
# returns {1 if set, the pointer's value before ('' if none)}.
_FLIP = """
local live = redis.call('GET', KEYS[1])
if live and tonumber(live) >= tonumber(ARGV[1]) then
  return {0, live}
end
redis.call('SET', KEYS[2], ARGV[2], 'NX')
redis.call('SET', KEYS[1], ARGV[1])
return {1, live or ''}
"""


class VersionConflict(FeatureStoreError):
    """Another materialization flipped to a newer version first; this one's rows were dropped."""


class StoreWriter:
    """Writes versions of one namespace's tables; `open_writer` builds one from a URL or directory.

    `description` names the store in messages; `embedded` is the server this writer started or
    attached to, stopped (if nobody else uses it) on `close`. A Redis Cluster is written by the
    subclass `cluster_writer.ClusterStoreWriter`.
    """

    _outages: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
    """The errors that mean Redis is unreachable: raised as StoreUnavailable."""

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        description: str = "redis",
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.description = description
        self._client = client
        self.embedded = embedded
        self._begin = client.register_script(_BEGIN)
        self._flip = client.register_script(_FLIP)
        self._pointer = pointer_key(namespace)
        self._records: dict[int, dict[StoredEntity, Record]] = {}

    def current_version(self) -> int | None:
        """The version readers are served, None if nothing was ever flipped to."""
        return parse_version(self._call(self._client.get, self._pointer), self._pointer)

    def begin(self) -> int:
        """A new version number, higher than the live one and than any handed out before."""
        return int(self._call(self._begin, [counter_key(self.namespace), self._pointer]))

    def write(
        self,
        version: int,
        entity: StoredEntity,
        rows: Iterable[tuple[str, Row]],
        *,
        record: Record | None = None,
        ttl_s: int | None = None,
    ) -> int:
        """Store `(entity_id, row)` pairs in `version`, `WRITE_BATCH` keys per round trip.

        Each row is stored as a fixed-size record (`records.Record`). The first write of `entity`
        into `version` fixes its record: `record`, or by default the smallest that holds the rows
        given (`Record.infer`); `write_metadata` records it. Later writes of it must keep it
        (ValueError otherwise, as for a row with a feature outside it, or a string too wide).
        With `ttl_s`, each row expires that many seconds after it was written (it then reads as
        absent), else rows live until their version is deleted. Returns how many were written.
        """
        fixed = self._records.setdefault(version, {})
        if entity not in fixed:
            if record is None:
                rows = list(rows)
                record = Record.infer(row for _, row in rows)
            fixed[entity] = record
        elif record is not None and record != fixed[entity]:
            raise ValueError(
                f"version {version} stores {entity} records {fixed[entity].to_record()}, "
                f"not {record.to_record()}"
            )
        record = fixed[entity]
        prefix = entity_prefix(self.namespace, version, entity)
        written = 0
        for batch in _batches(rows):
            blobs = record.encode([row for _, row in batch])
            mapping = {
                prefix + entity_id.encode(): blob
                for (entity_id, _), blob in zip(batch, blobs, strict=True)
            }
            self._store(mapping, ttl_s)
            written += len(batch)
        return written

    def layout(self, version: int) -> Layout:
        """The records this writer stored each entity of `version` in (empty if none)."""
        fixed = self._records.get(version, {})
        return Layout(user=fixed.get("user", Record()), item=fixed.get("item", Record()))

    def write_metadata(self, version: int, record: dict[str, Any]) -> None:
        """Store what `version` holds (a JSON object), read back by `RedisOnlineStore.metadata`,
        with its `"columns"` (`layout(version)`, the record of each entity) added: write it after
        the rows, before `flip`."""
        self._call(self._client.set, meta_key(self.namespace, version), self._meta(version, record))

    def flip(self, version: int) -> int | None:
        """Serve `version` from now on; return the version served before (None if none).

        Readers decode rows by the record layout in the version's metadata: if `write_metadata`
        was not called, the flip stores `{"version", "columns"}` as this writer wrote them.
        Raises VersionConflict, after deleting `version`, if a newer version is already live.
        """
        flipped, before = self._flip_pointer(version, self._meta(version, {"version": version}))
        if not flipped:
            self.discard(version)
            raise VersionConflict(
                f"{self.description}: namespace {self.namespace!r} already serves version "
                f"{int(before)}, newer than {version}; version {version} was discarded"
            )
        return int(before) if before else None

    def delete_versions_below(self, version: int) -> int:
        """Delete every key of every version older than `version`; return how many keys."""
        old = (
            key
            for key in self._scan(versions_pattern(self.namespace))
            if (n := key_version(self.namespace, key)) is not None and n < version
        )
        return self._delete(old)

    def discard(self, version: int) -> int:
        """Delete every key of one version; return how many keys."""
        return self._delete(self._scan(version_prefix(self.namespace, version) + b"*"))

    def persist(self) -> None:
        """Make the writes durable: SAVE for the embedded store; a URL's Redis persists itself."""
        if self.embedded is not None:
            self._call(self._client.save)

    def close(self) -> None:
        """Close the connections, then stop the embedded server if no other process uses it."""
        self._client.close()
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------

    def _flip_pointer(self, version: int, minimal_meta: bytes) -> tuple[int, bytes]:
        """The compare-and-set of `flip` (storing `minimal_meta` unless the version has a meta
        record): (1 if the pointer moved to `version` else 0, the pointer before or b"")."""
        keys = [self._pointer, meta_key(self.namespace, version)]
        flipped, before = self._call(self._flip, keys, [version, minimal_meta])
        return int(flipped), before

    def _store(self, values: dict[bytes, bytes], ttl_s: int | None) -> None:
        """SET every key of `values` in one round trip: one MSET, or SETs with an expiry."""
        if ttl_s is None:
            self._call(self._client.mset, values)
        else:
            pipe = self._client.pipeline(transaction=False)
            for key, blob in values.items():
                pipe.set(key, blob, ex=ttl_s)
            self._call(pipe.execute)

    def _meta(self, version: int, record: dict[str, Any]) -> bytes:
        full = {**record, "columns": self.layout(version).to_record()}
        return json.dumps(full, sort_keys=True).encode()

    def _scan(self, pattern: bytes) -> Iterator[bytes]:
        try:
            yield from self._client.scan_iter(match=pattern, count=5000)
        except self._outages as err:
            raise StoreUnavailable(f"{self.description}: {err}") from err

    def _delete(self, keys: Iterable[bytes]) -> int:
        # SCAN may return a key twice; deleting it twice is harmless, and counted once by Redis
        return sum(int(self._call(self._client.unlink, *batch)) for batch in _batches(keys))

    def _call(self, command: Callable[..., T], *args: Any) -> T:
        """`command(*args)`, with connection failures turned into StoreUnavailable."""
        try:
            return command(*args)
        except self._outages as err:
            raise StoreUnavailable(f"{self.description}: {err}") from err


def open_writer(
    *,
    url: str | None = None,
    data_dir: str | Path | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    timeout: float = DEFAULT_WRITE_TIMEOUT_S,
) -> StoreWriter:
    """A writer of the store at a Redis `url` (a `redis+cluster://` URL: `ClusterStoreWriter`),
    or of the embedded store of `data_dir` (created if needed). `timeout` bounds every socket
    operation, in seconds."""
    check_namespace(namespace)
    endpoint: Endpoint = locate(url=url, data_dir=data_dir, create=True)
    if endpoint.cluster:
        from feature_store.cluster_writer import ClusterStoreWriter  # a subclass: imported here

        return ClusterStoreWriter(
            endpoint.cluster_client(timeout),
            namespace=namespace,
            description=endpoint.description,
        )
    return StoreWriter(
        endpoint.client(timeout),
        namespace=namespace,
        description=endpoint.description,
        embedded=endpoint.embedded,
    )


def _batches(items: Iterable[T]) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, WRITE_BATCH)):
        yield batch
