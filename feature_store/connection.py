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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from feature_store.embedded import EmbeddedRedis, store_path
from feature_store.errors import StoreConfigError


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


def redact(url: str) -> str:
    """`url` with its password replaced by '***', for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))
