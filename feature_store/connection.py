"""Where a store lives (a Redis URL or an embedded server) and the redis-py clients that reach it.

The reader (`redis_store`, asyncio) and the writer (`writer`, blocking) open the same endpoints
the same way: socket timeouts set, no backoff, and for the embedded store connections named so
that `EmbeddedRedis.stop` can tell whether another process still uses the server. The reader's
commands are all reads, so its client retries a command once, at once, on a connection error: a
pooled connection that died with a Redis restart is replaced within the same lookup (the whole
lookup stays bounded by the reader's timeout). The writer's client never retries: INCR and the
flip script must not run twice, and a failure surfaces at once as `StoreUnavailable`.

The reader's connections pack commands with hiredis, as redis-py's blocking client already does:
its asyncio client packs them in Python, argument by argument (redis-py issue #4176), which for a
lookup's MGET of 501 keys cost 0.1-0.36 ms at p50 (`async_mget_raw` against
`async_mget_raw_hiredis` in `benchmarks/store_latency.py`; figures in docs/feature_store.md).

A Redis Cluster is named by `redis+cluster://[user:password@]host:port[,host:port...]` (any of its
nodes: the clients discover the rest), `rediss+cluster://` for TLS; options go in the query string
as for `redis://` (redis-py's `parse_url`). Its clients are redis-py's cluster clients
(`redis.cluster.RedisCluster` for the writer, `redis.asyncio.cluster.RedisCluster` for the
reader) with the same timeouts and retries as above; the reader's lookups go through
`cluster_store`, the writer's writes through `cluster_writer`.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.connection import AbstractConnection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ResponseError
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from feature_store.embedded import EmbeddedRedis, store_path
from feature_store.errors import StoreConfigError, StoreUnavailable

if HIREDIS_AVAILABLE:  # a dependency (redis[hiredis]), but not worth failing without
    import hiredis

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""A cluster URL's scheme, and the scheme of the single-node URL its options are read as."""


def redis_url(flag: str | None = None) -> str | None:
    """The Redis a command uses: its `--redis URL` flag, else `$REDIS_URL`, else None (the
    caller's embedded default). Every command that takes `--redis` falls back the same way."""
    return flag or os.environ.get("REDIS_URL") or None


@dataclass(frozen=True)
class Endpoint:
    """A Redis to connect to: `url` (any Redis, or the embedded server's unix socket).

    `description` names it in messages (the URL without its password, or the directory);
    `embedded` is the server this process started or attached to, if any.
    """

    url: str
    description: str
    embedded: EmbeddedRedis | None = None

    @property
    def cluster(self) -> bool:
        """True for a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
        return urlsplit(self.url).scheme.lower() in CLUSTER_SCHEMES

    def client(self, timeout: float) -> redis.Redis:
        """A blocking client, never retrying, whose socket operations give up after `timeout` s."""
        return redis.Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries=0),
            client_name=self._client_name,
        )

    def async_client(self, timeout: float) -> redis.asyncio.Redis:
        """An asyncio client for reads: socket operations give up after `timeout` seconds, a
        command that met a dead connection is sent once more on a new one, and commands are
        packed by hiredis."""
        client = redis.asyncio.Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), retries=1),
            client_name=self._client_name,
        )
        pool = client.connection_pool  # its class depends on the URL's scheme: swap in ours
        if HIREDIS_AVAILABLE:  # a dependency (redis[hiredis]), but not worth failing without
            pool.connection_class = _HIREDIS_PACKED.get(
                pool.connection_class, pool.connection_class
            )
        return client

    def cluster_client(self, timeout: float) -> redis.cluster.RedisCluster:
        """A blocking Redis Cluster client, never retrying a command (MOVED and ASK redirections
        are still followed), whose socket operations give up after `timeout` seconds. It reads
        the slot map as it is made: StoreUnavailable if no node answers."""
        nodes, options = parse_cluster_url(self.url)
        try:
            return redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in nodes],
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), retries=0),
                **options,
            )
        except (redis.exceptions.RedisClusterException, redis.ConnectionError) as err:
            raise StoreUnavailable(f"{self.description}: {err}") from err

    def async_cluster_client(self, timeout: float) -> redis.asyncio.cluster.RedisCluster:
        """An asyncio Redis Cluster client for reads: socket operations give up after `timeout`
        seconds; a command that failed on a connection or met CLUSTERDOWN is sent once more, at
        once, after the slot map was refreshed (at most once a second: redis-py's
        `topology_refresh_min_interval`)."""
        nodes, options = parse_cluster_url(self.url)
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(host, port) for host, port in nodes],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), retries=1),
            **options,
        )

    @property
    def _client_name(self) -> str | None:
        return None if self.embedded is None else self.embedded.client_name


class _HiredisPacking:
    """Packs each command with `hiredis.pack_command` (one C call) instead of redis-py's asyncio
    packer (Python, per argument): the same bytes on the wire."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)


class _TcpConnection(_HiredisPacking, redis.asyncio.Connection):
    pass


class _UnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


class _SslConnection(_HiredisPacking, SSLConnection):
    pass


_HIREDIS_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    redis.asyncio.Connection: _TcpConnection,
    UnixDomainSocketConnection: _UnixConnection,
    SSLConnection: _SslConnection,
}


def locate(
    *, url: str | None = None, data_dir: str | Path | None = None, create: bool = False
) -> Endpoint:
    """The endpoint of a Redis `url`, or of the embedded store of `data_dir` (exactly one).

    A URL is checked but not contacted. The embedded store's server is started (or attached to)
    here; a directory never materialized is an error unless `create` (materialization passes it),
    so that a mistyped `--store DIR` does not serve defaults silently.
    """
    if (url is None) == (data_dir is None):
        raise ValueError("a store needs exactly one of url= or data_dir=")
    if url is not None:
        try:
            if Endpoint(url, url).cluster:
                parse_cluster_url(url)
            else:
                redis.connection.parse_url(url)
        except ValueError as err:
            raise StoreConfigError(f"bad Redis URL {redact(url)!r}: {err}") from None
        return Endpoint(url, redact(url))
    assert data_dir is not None
    embedded = EmbeddedRedis(store_path(data_dir))
    if not create and not embedded.db_path.exists():
        raise StoreConfigError(
            f"{data_dir}: no embedded online store here; run `mtrank features materialize "
            f"--data {data_dir}` first"
        )
    embedded.start()
    return Endpoint(
        embedded.url, f"embedded store {embedded.directory.resolve()}", embedded=embedded
    )


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes `[(host, port), ...]` of a `redis+cluster://` or `rediss+cluster://` URL
    and the options its clients take (username, password, TLS, the query string's options, read
    as redis-py's `parse_url` reads them for one node).

    ValueError, naming what is wrong, for a URL without nodes, a node without a port, a database
    other than 0 (a cluster has only database 0) or an option the cluster clients do not take.
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"a cluster URL starts with {' or '.join(CLUSTER_SCHEMES)}://")
    userinfo, at, addresses = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for address in addresses.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster node {address!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {parts.path[1:]!r}")
    first_node = urlunsplit((scheme, userinfo + at + addresses.split(",")[0], "", parts.query, ""))
    options: dict[str, Any] = dict(redis.connection.parse_url(first_node))
    for per_node in ("host", "port", "db"):
        options.pop(per_node, None)
    if options.pop("connection_class", None) is redis.connection.SSLConnection:
        options["ssl"] = True
    unknown = sorted(set(options) - _CLUSTER_OPTIONS)
    if unknown:
        raise ValueError(f"option {unknown[0]!r} is not one a Redis Cluster client takes")
    return nodes, options


_CLUSTER_OPTIONS = set(inspect.signature(redis.asyncio.cluster.RedisCluster).parameters)
"""The options of redis-py's cluster clients (the blocking one takes them as **kwargs)."""


def redact(url: str) -> str:
    """`url` with its password replaced by '***', for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


Command = tuple[str | bytes, ...]
"""A command as sent: its name, then its arguments (keys as bytes)."""


async def round_trip(connection: AbstractConnection, commands: list[Command]) -> list[Any]:
    """Send `commands` on `connection` in one write and read their replies in order; a
    command's error reply is returned in its place (the rest are still read, so the connection
    stays in step). The caller's timeout bounds the reads: a connection left mid-reply (timed
    out, cancelled) is closed by redis-py before it returns to its pool."""
    await connection.send_packed_command(_pack(connection, commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(
                await connection.read_response(disable_decoding=True, timeout=_NO_READ_TIMEOUT)
            )
        except ResponseError as err:
            replies.append(err)
    return replies


def _pack(connection: AbstractConnection, commands: list[Command]) -> bytes | list[bytes]:
    """The commands as one write: one C call each with hiredis (the keys are bytes already),
    else redis-py's packer."""
    if HIREDIS_AVAILABLE:
        # (hiredis's stub types its argument as a tuple of one element)
        return b"".join([hiredis.pack_command(command) for command in commands])  # type: ignore[arg-type]
    return connection.pack_commands(commands)


_NO_READ_TIMEOUT = math.inf
"""redis-py's `read_response(timeout=inf)`: no timeout per reply; the caller's bounds them all."""
