"""Reading the online store from a Redis Cluster: one pipelined round trip to each node, all at once.

The cluster holds the same keys and records as a single Redis (`feature_store.keys`,
`feature_store.records`). Each key's hash slot is the CRC16 of the whole key (no hash tags), so
the keys of one lookup spread over the cluster's masters, and the pointer `{namespace}:current`
lives on one of them. Redis Cluster refuses a command or a MULTI/EXEC whose keys are in different
slots (CROSSSLOT), even slots of one node. A lookup therefore groups its keys by slot, one MGET per
slot, and the slots by the master that serves them (redis-py's slot map); each master gets its
MGETs, and the GETs of the pointer or meta record that it holds, in one pipelined write, and the
masters are read concurrently (`asyncio.gather`). The commands are packed by hiredis and the
replies read off each node's connection as they come (`connection.round_trip`): redis-py's own cluster pipeline costs about
10 us of Python per command, 5-8 ms for a lookup of 501 keys in ~490 slots
(`cluster_redis_py_pipeline` in `benchmarks/store_latency.py`; figures in docs/feature_store.md).

Versions without a transaction. A lookup reads version N only once it saw the pointer at N, and a
key of version N holds N's value or nothing (a version is written before its flip and never
rewritten), so every value a lookup gets back is N's. A key that comes back absent is trusted only
if the pointer still says N after that reply arrived: the pointer moves forward only, and the
writer deletes N only after flipping past it, so N was then live, complete and not deleted. The
pointer read in the same round does not prove that (its node may answer before another node
deletes N's keys), so a lookup that found a key or the meta record absent reads the pointer once
more, a second round trip (lookups that found every key take one); if it moved, the lookup reads
the live version instead, as when the first read already said so. Writers therefore delete old
versions right after the flip (`cluster_writer`), with no grace period to tune.

Failures, within the store's timeout and circuit breaker (`RedisOnlineStore._call`): commands that
a node answered with a redirection (MOVED or ASK: a slot moved, as after a failover; TRYAGAIN), or
whose node connection failed, are sent again through redis-py's cluster pipeline, which follows
redirections (patching its slot map), and after a connection error asks for a slot map refresh
and retries once. CLUSTERDOWN (a master failed and its replica was not promoted yet: every node
refuses commands) is an outage at once. So while a master is down lookups fail fast with
`StoreUnavailable`; once its replica is promoted, the first lookup after the breaker's
`retry_after` meets a connection error, the refresh it asks for runs (at most once a second,
redis-py's `topology_refresh_min_interval`), and full answers resume without a restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, ClusterError, RedisClusterException, ResponseError

from feature_store.connection import Command, round_trip
from feature_store.keys import meta_key, parse_version
from feature_store.redis_store import RedisOnlineStore

Slotted = tuple[int, Command]
"""A command (its keys all in one slot) and the hash slot of its keys."""


class ClusterOnlineStore(RedisOnlineStore):
    """An `OnlineStore` over redis-py's asyncio Redis Cluster client; `open_async_store` builds
    one for a `redis+cluster://` URL. Same results, caches, timeout and breaker as
    `RedisOnlineStore`; only the reads of a lookup differ (see the module doc)."""

    _outages = (*RedisOnlineStore._outages, ClusterError, RedisClusterException)

    @property
    def _cluster(self) -> RedisCluster:
        assert isinstance(self._client, RedisCluster)
        return self._client

    async def _read(
        self, version: int, keys: list[bytes], with_meta: bool
    ) -> tuple[int | None, bytes | None, list[bytes | None]]:
        """The live version, `version`'s meta record (if `with_meta`) and the values at `keys`:
        one round trip to each node holding them, a second (the pointer alone) if a key or the
        meta record was absent and the first said `version` was live."""
        commands: list[Slotted] = [(key_slot(self._pointer), ("GET", self._pointer))]
        if with_meta:
            meta = meta_key(self.namespace, version)
            commands.append((key_slot(meta), ("GET", meta)))
        heads = len(commands)
        by_slot: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            by_slot.setdefault(key_slot(key), []).append(position)
        for slot, positions in by_slot.items():
            commands.append((slot, ("MGET", *(keys[p] for p in positions))))
        replies = await self._round(commands)
        blobs: list[bytes | None] = [None] * len(keys)
        for positions, values in zip(by_slot.values(), replies[heads:], strict=True):
            for position, value in zip(positions, values, strict=True):
                blobs[position] = value
        live = parse_version(replies[0], self._pointer)
        meta_blob = replies[1] if with_meta else None
        if live == version and ((with_meta and meta_blob is None) or None in blobs):
            live = await self._live()  # after the absent replies: were they absent in `version`?
        return live, meta_blob, blobs

    async def _round(self, commands: list[Slotted]) -> list[Any]:
        """The replies to `commands`: every master holding some of their slots gets its own in
        one pipelined write, all masters at once; redirections and failed connections are left
        to redis-py's cluster pipeline."""
        cluster = self._cluster
        await cluster.initialize()  # the slot map: read once, refreshed when an error asked
        by_node: dict[ClusterNode, list[int]] = {}
        for position, (slot, _) in enumerate(commands):
            node = cluster.nodes_manager.get_node_from_slot(slot)
            by_node.setdefault(node, []).append(position)
        results = await asyncio.gather(
            *(_pipelined(node, [commands[p][1] for p in positions]) for node, positions in by_node.items()),
            return_exceptions=True,
        )  # fmt: skip
        replies: list[Any] = [None] * len(commands)
        again: list[int] = []
        for positions, result in zip(by_node.values(), results, strict=True):
            if isinstance(result, (redis.ConnectionError, redis.TimeoutError)):
                again += positions
                continue
            if isinstance(result, BaseException):
                raise result
            for position, reply in zip(positions, result, strict=True):
                if isinstance(reply, ClusterDownError):
                    raise reply
                if isinstance(reply, ResponseError):  # MOVED, ASK, TRYAGAIN
                    again.append(position)
                else:
                    replies[position] = reply
        if again:
            pipe = cluster.pipeline()
            for position in again:
                pipe.execute_command(*commands[position][1])
            for position, reply in zip(again, await pipe.execute(), strict=True):
                replies[position] = reply
        return replies


async def _pipelined(node: ClusterNode, commands: list[Command]) -> list[Any]:
    """Send `commands` to `node` in one write and read their replies in order (`round_trip`:
    a command's error reply is returned in its place, so the connection stays in step)."""
    connection = node.acquire_connection()
    try:
        await node.disconnect_if_needed(connection)
        return await round_trip(connection, commands)
    finally:
        node.release(connection)
