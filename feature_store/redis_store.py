"""The online store serving reads: Redis through redis-py's asyncio API, with an in-process cache.

A lookup is one round trip: a MULTI/EXEC transaction of `GET {namespace}:current` and one MGET of
the user's and the items' keys in the version this store last saw. When the pointer says a newer
version went live, the store forgets its cached rows and reads again from that version (once per
flip), so a reader never mixes two versions nor reads one that was deleted under it. The first
read of a version also GETs its meta record in the same transaction, for the layout of its records
(`Layout`), kept until the next flip. The records are read as one numpy structured array
(`records.Record.decode`) and the commands packed by hiredis (`connection`).

A server-side Lua script doing the same in one atomic call (resolve the pointer, MGET, return the
records joined) was measured and not adopted: no faster at p50, and Redis turning 501 values into
Lua strings costs it 2.2-2.5x the CPU per lookup (`store_lua_script` in
`benchmarks/store_latency.py`; figures in docs/feature_store.md).

Failures surface as `StoreUnavailable` within `timeout` (default 50 ms) so that serving degrades
instead of hanging: the whole lookup runs under `asyncio.timeout` (a command that met a dead
pooled connection is resent once, at once, inside that budget). A circuit breaker keeps
degraded requests from each waiting `timeout` while Redis is down or hung: a refused connection
opens it at once, timeouts only after `failure_threshold` in a row (one slow answer on a busy
machine is not an outage), and while open the store refuses calls for `retry_after` seconds
without touching the network. A timeout that fired late, by more than half of `timeout`, is not
counted: the event loop itself was blocked (a model version loading, say), so it says nothing
about Redis, and opening the breaker would degrade every request for `retry_after` after the
process is responsive again.
`ping` always tries (it is the readiness probe) and ends that cool-down. Connections that died
with a Redis restart are replaced by the pool on their next use: the same store object resumes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.exceptions import ResponseError

from feature_store.cache import CacheConfig, EntityCache
from feature_store.connection import Command, locate, round_trip
from feature_store.embedded import EmbeddedRedis
from feature_store.errors import StoreUnavailable
from feature_store.keys import DEFAULT_NAMESPACE, check_namespace, meta_key, parse_version
from feature_store.keys import pointer_key as _pointer_key
from feature_store.lookup import Lookup
from feature_store.online_features import OnlineFeatures
from feature_store.records import Layout

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 0.050
DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_FAILURE_THRESHOLD = 3  # timeouts in a row before the breaker opens
MAX_FLIPS_PER_LOOKUP = 3  # versions flipping faster than a lookup reads are a misconfiguration
POINTER_CHECK_S = 1.0


class RedisOnlineStore:
    """An `OnlineStore` over an asyncio redis-py client; `open_async_store` builds one.

    `description` names the store in messages (the URL without its password, or the directory).
    `embedded` is the server this store started or attached to, stopped (if unused) on `aclose`.
    `version` is the table version the last lookup read (None before, or if none is live), and
    `layout` its records (None until read with the first lookup of that version).
    A lookup the caches answer entirely skips Redis, unless the pointer was last read more than
    `pointer_check_s` seconds ago: then it reads the pointer, so flips are seen within that time.
    A Redis Cluster is read by the subclass `cluster_store.ClusterOnlineStore`.
    """

    _outages: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
    """The errors that mean Redis is unreachable: StoreUnavailable, and the breaker opens."""

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        description: str = "redis",
        timeout: float = DEFAULT_TIMEOUT_S,
        retry_after: float = DEFAULT_RETRY_AFTER_S,
        cache: CacheConfig | None = None,
        embedded: EmbeddedRedis | None = None,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self._timeouts_in_a_row = 0
        self.namespace = check_namespace(namespace)
        self.description = description
        self.timeout = timeout
        self.retry_after = retry_after
        self.embedded = embedded
        self.version: int | None = None
        self.layout: Layout | None = None
        cache = cache if cache is not None else CacheConfig()
        self.user_cache = None if cache.user is None else EntityCache(cache.user)
        self.item_cache = None if cache.item is None else EntityCache(cache.item)
        self._client = client
        self.pointer_check_s = POINTER_CHECK_S
        self._pointer = _pointer_key(namespace)
        self._pointer_read_at = 0.0
        self._down_until = 0.0

    # ---- reads (the hot path) ----------------------------------------------------------------

    async def get_online_features(self, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        """Read one user and all `item_ids` in one round trip; absent rows come back as None.

        Raises StoreUnavailable when Redis does not answer within `timeout`.
        """
        return await self._call(self._lookup, user_id, item_ids)

    async def metadata(self) -> dict[str, Any] | None:
        """The record of the live version's materialization, None if nothing was materialized."""
        return await self._call(self._metadata)

    async def ping(self) -> None:
        """Return if Redis answers (ending the cool-down of a failure), else StoreUnavailable."""
        self._down_until = 0.0
        await self._call(self._client.ping)

    def cache_stats(self) -> dict[str, dict[str, float]]:
        """Per cached entity kind: hits, misses, hit_ratio and size, for serving's metrics."""
        caches = {"user": self.user_cache, "item": self.item_cache}
        return {
            entity: {
                "hits": cache.hits,
                "misses": cache.misses,
                "hit_ratio": cache.hit_ratio,
                "size": len(cache),
            }
            for entity, cache in caches.items()
            if cache is not None
        }

    async def aclose(self) -> None:
        """Close the connections, then stop the embedded server if no other process uses it."""
        await self._client.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    async def __aenter__(self) -> RedisOnlineStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- internals --------------------------------------------------------------------------

    async def _lookup(self, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        lookup = self._plan(user_id, item_ids)
        if (
            lookup.complete
            and self.layout is not None
            and time.monotonic() - self._pointer_read_at < self.pointer_check_s
        ):
            return lookup.finish(self.version, self.layout, [], [])
        if self.version is None:  # first lookup, or nothing live yet: learn the version first
            # (the caches hold nothing while no version is known: `lookup` stays valid)
            self._observe(await self._live())
            self._pointer_read_at = time.monotonic()
        for _ in range(MAX_FLIPS_PER_LOOKUP):
            version, layout = self.version, self.layout  # as of now: other lookups may flip them
            if version is None:
                return lookup.finish(None, Layout(), [], [])
            keys = lookup.keys(self.namespace, version)
            meta = meta_key(self.namespace, version)
            if keys or layout is None:  # (a version not read before: its record layout too)
                live, meta_blob, blobs = await self._read(version, keys, layout is None)
            else:  # the caches hold every row: only check that they are still current
                live, meta_blob, blobs = await self._live(), None, []
            self._pointer_read_at = time.monotonic()
            if live == version:
                if layout is None:
                    layout = Layout.from_meta(meta_blob, meta)
                    if self.version == version:
                        self.layout = layout
                return lookup.finish(version, layout, keys, blobs)
            self._observe(live)  # flipped since the last lookup: read the live version instead
            lookup = self._plan(user_id, item_ids)
        raise StoreUnavailable(
            f"{self.description}: namespace {self.namespace!r} changed version "
            f"{MAX_FLIPS_PER_LOOKUP} times during one lookup"
        )

    async def _read(
        self, version: int, keys: list[bytes], with_meta: bool
    ) -> tuple[int | None, bytes | None, list[bytes | None]]:
        """One round trip: the live version, `version`'s meta record (if `with_meta`) and the
        values at `keys` (keys of `version`), read together in one MULTI/EXEC transaction, so
        the values are `version`'s whenever the live version read is `version`."""
        commands: list[Command] = [("GET", self._pointer)]
        if with_meta:
            commands.append(("GET", meta_key(self.namespace, version)))
        if keys:
            commands.append(("MGET", *keys))
        replies = await self._transaction(commands)
        live = parse_version(replies[0], self._pointer)
        return live, replies[1] if with_meta else None, replies[-1] if keys else []

    async def _transaction(self, commands: list[Command]) -> list[Any]:
        """EXEC's replies to `commands`: MULTI, the commands and EXEC sent in one write on a
        pooled connection (`round_trip`) and read reply by reply: 0.20 ms of Python per lookup
        of 501 keys, where redis-py's pipeline object took 0.33. A connection error is retried once
        on a new connection, as the client's own commands are (its `retry`)."""
        assert isinstance(self._client, redis.asyncio.Redis)  # (a cluster reads by `_read`)
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            replies = await connection.retry.call_with_retry(
                lambda: round_trip(connection, [("MULTI",), *commands, ("EXEC",)]),
                lambda _: connection.disconnect(),
            )
        finally:
            await pool.release(connection)
        for reply in replies:  # OK, QUEUED..., EXEC's array: or an error in place of one
            if isinstance(reply, ResponseError):
                raise reply
        errors = [reply for reply in replies[-1] if isinstance(reply, ResponseError)]
        if errors:
            raise errors[0]
        return list(replies[-1])

    async def _live(self) -> int | None:
        """The live version, as the pointer says now."""
        return parse_version(await self._client.get(self._pointer), self._pointer)

    async def _metadata(self) -> dict[str, Any] | None:
        live = await self._live()
        if live is None:
            return None
        blob = await self._client.get(meta_key(self.namespace, live))
        return None if blob is None else json.loads(blob)

    def _plan(self, user_id: str, item_ids: Sequence[str]) -> Lookup:
        return Lookup(user_id, item_ids, user_cache=self.user_cache, item_cache=self.item_cache)

    def _observe(self, version: int | None) -> None:
        """Remember the live version; a new one invalidates every cached row and the layout."""
        if version == self.version and version is not None:
            return
        self.version = version
        self.layout = None
        for cache in (self.user_cache, self.item_cache):
            if cache is not None:
                cache.reset(version)

    async def _call(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await operation(*args)` within `timeout`; failures become StoreUnavailable."""
        now = time.monotonic()
        if now < self._down_until:
            raise StoreUnavailable(
                f"{self.description}: unreachable, next try {self._down_until - now:.1f} s from now"
            )
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation(*args)
        except TimeoutError:
            late = time.monotonic() - now - self.timeout
            if late <= self.timeout / 2:  # on time: Redis did not answer (see the module doc)
                self._timeouts_in_a_row += 1
                if self._timeouts_in_a_row >= self.failure_threshold:
                    self._down_until = now + self.retry_after
            raise StoreUnavailable(
                f"{self.description}: no answer within {self.timeout * 1e3:.0f} ms"
            ) from None
        except self._outages as err:
            self._down_until = now + self.retry_after
            raise StoreUnavailable(f"{self.description}: {err}") from err
        self._timeouts_in_a_row = 0
        return result


def open_async_store(
    *,
    url: str | None = None,
    data_dir: str | Path | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    timeout: float = DEFAULT_TIMEOUT_S,
    cache: CacheConfig | None = None,
    retry_after: float = DEFAULT_RETRY_AFTER_S,
) -> RedisOnlineStore:
    """The store at a Redis `url` (`redis://`, `rediss://`, `unix://`; password and db in the URL;
    `redis+cluster://host:port[,host:port...]` for a Redis Cluster, read by
    `cluster_store.ClusterOnlineStore`), or the embedded store that `mtrank features materialize
    --data DIR` filled (exactly one).

    A URL is not contacted before the first call; the embedded store starts (or attaches to) its
    server here, and a directory never materialized is a StoreConfigError. `timeout` (seconds)
    bounds every call; `cache` picks the in-process caches (default `CacheConfig()`: users only,
    10,000 rows; `CacheConfig.off()` for none).
    """
    check_namespace(namespace)
    endpoint = locate(url=url, data_dir=data_dir)
    kind: type[RedisOnlineStore] = RedisOnlineStore
    client: redis.asyncio.Redis | redis.asyncio.RedisCluster
    if endpoint.cluster:
        from feature_store.cluster_store import ClusterOnlineStore  # a subclass: imported here

        kind, client = ClusterOnlineStore, endpoint.async_cluster_client(timeout)
    else:
        client = endpoint.async_client(timeout)
    return kind(
        client,
        namespace=namespace,
        description=endpoint.description,
        timeout=timeout,
        retry_after=retry_after,
        cache=cache,
        embedded=endpoint.embedded,
    )
