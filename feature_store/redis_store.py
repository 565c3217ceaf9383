"""The Redis implementation of the online store (embedded redis-server or any Redis URL).

Reads are one MGET per request (user key first, then every item key) and a msgpack decode per
row. Connection failures surface as `StoreUnavailable` fast: redis-py's retries with backoff are
off (the connection pool already replaces a connection that went stale across a Redis restart),
and after a failure the store refuses further calls for `retry_after` seconds without touching
the network, so while Redis is dead or hung, requests in degraded mode do not each wait for a
`timeout`. `ping` always tries, and ends that cool-down when Redis is back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_store.codec import (
    DEFAULT_NAMESPACE,
    Row,
    StoredEntity,
    check_namespace,
    decode_row,
    encode_row,
    entity_key,
    entity_prefix,
    meta_key,
)
from feature_store.embedded import EmbeddedRedis, store_path
from feature_store.errors import StoreConfigError, StoreUnavailable
from feature_store.store import OnlineFeatures

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RETRY_AFTER_S = 1.0
WRITE_BATCH = 1000


class RedisOnlineStore:
    """An `OnlineStore` over a redis-py client; `open_store` builds one from a URL or a directory.

    `description` names the store in messages (the URL without its password, or the directory).
    `embedded` is the server this store started or attached to, stopped (if unused) on `close`.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        description: str = "redis",
        retry_after: float = DEFAULT_RETRY_AFTER_S,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after}")
        self.namespace = check_namespace(namespace)
        self.description = description
        self.retry_after = retry_after
        self.embedded = embedded
        self._client = client
        self._down_until = 0.0
        self._user_prefix = entity_prefix(namespace, "user")
        self._item_prefix = entity_prefix(namespace, "item")

    # ---- reads (the hot path) ----------------------------------------------------------------

    def get_online_features(self, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        """Read one user and all `item_ids` with one MGET; absent rows come back as None."""
        keys = [self._user_prefix + user_id.encode()]
        keys += [self._item_prefix + item_id.encode() for item_id in item_ids]
        rows = self._mget(keys)
        return OnlineFeatures(user_id, item_ids, rows[0], rows[1:])

    def read(self, entity: StoredEntity, entity_ids: Sequence[str]) -> list[Row | None]:
        """The stored rows of `entity_ids` (None where absent), in order, with one MGET."""
        keys = [entity_key(self.namespace, entity, entity_id) for entity_id in entity_ids]
        return self._mget(keys) if keys else []

    def metadata(self) -> dict[str, Any] | None:
        """The record `write_metadata` left, or None if this namespace was never materialized."""
        blob = self._call(self._client.get, meta_key(self.namespace))
        return None if blob is None else json.loads(blob)

    def ping(self) -> None:
        """Return if Redis answers (ending the cool-down of a failure), else StoreUnavailable."""
        self._down_until = 0.0
        self._call(self._client.ping)

    # ---- writes (materialization) ------------------------------------------------------------

    def write(self, entity: StoredEntity, rows: Iterable[tuple[str, Row]]) -> int:
        """Store `(entity_id, row)` pairs with pipelined MSETs of `WRITE_BATCH` keys each."""
        written = 0
        rows = iter(rows)
        while batch := list(islice(rows, WRITE_BATCH)):
            mapping = {entity_key(self.namespace, entity, i): encode_row(row) for i, row in batch}
            self._call(self._client.mset, mapping)
            written += len(batch)
        return written

    def entity_ids(self, entity: StoredEntity) -> list[str]:
        """Every id stored for `entity` (SCAN, so it does not block Redis on large stores)."""
        prefix = entity_prefix(self.namespace, entity)
        keys: list[bytes] = self._call(_scan, self._client, prefix + b"*")
        return [key[len(prefix) :].decode() for key in keys]

    def delete(self, entity: StoredEntity, entity_ids: Iterable[str]) -> int:
        """Delete the rows of `entity_ids`; return how many existed."""
        deleted = 0
        ids = iter(entity_ids)
        while batch := list(islice(ids, WRITE_BATCH)):
            keys = [entity_key(self.namespace, entity, i) for i in batch]
            deleted += int(self._call(self._client.delete, *keys))
        return deleted

    def write_metadata(self, record: dict[str, Any]) -> None:
        """Replace this namespace's materialization record (a JSON object)."""
        blob = json.dumps(record, sort_keys=True).encode()
        self._call(self._client.set, meta_key(self.namespace), blob)

    def persist(self) -> None:
        """Make the writes durable: SAVE for the embedded store; a URL's Redis persists itself."""
        if self.embedded is not None:
            self._call(self._client.save)

    def close(self) -> None:
        """Close the connections, then stop the embedded server if no other process uses it."""
        self._client.close()
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> RedisOnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------

    def _mget(self, keys: list[bytes]) -> list[Row | None]:
        """The decoded rows at `keys` (None where absent), fetched with one MGET."""
        blobs: list[Any] = self._call(self._client.mget, keys)  # bytes or None
        return [
            None if blob is None else decode_row(blob, key)
            for key, blob in zip(keys, blobs, strict=True)
        ]

    def _call(self, command: Callable[..., T], *args: Any) -> T:
        """`command(*args)`, with connection failures turned into StoreUnavailable."""
        now = time.monotonic()
        if now < self._down_until:
            raise StoreUnavailable(
                f"{self.description}: unreachable, next try {self._down_until - now:.1f} s from now"
            )
        try:
            return command(*args)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            self._down_until = now + self.retry_after
            raise StoreUnavailable(f"{self.description}: {err}") from err


def open_store(
    *,
    url: str | None = None,
    data_dir: str | Path | None = None,
    create: bool = False,
    namespace: str = DEFAULT_NAMESPACE,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry_after: float = DEFAULT_RETRY_AFTER_S,
) -> RedisOnlineStore:
    """Open the store at a Redis `url`, or the embedded store of `data_dir` (exactly one of them).

    An embedded store that was never materialized is an error unless `create` (materialization
    passes it): a mistyped `--store DIR` should not serve defaults silently. `timeout` bounds
    every socket operation in seconds. A URL is not contacted before the first call; the embedded
    store starts (or attaches to) its server here.
    """
    if (url is None) == (data_dir is None):
        raise ValueError("open_store needs exactly one of url= or data_dir=")
    check_namespace(namespace)
    retry = Retry(NoBackoff(), retries=0)
    if url is not None:
        try:
            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry
            )
        except ValueError as err:
            raise StoreConfigError(f"bad Redis URL {redact(url)!r}: {err}") from None
        return RedisOnlineStore(
            client, namespace=namespace, description=redact(url), retry_after=retry_after
        )
    assert data_dir is not None
    embedded = EmbeddedRedis(store_path(data_dir))
    if not create and not embedded.db_path.exists():
        raise StoreConfigError(
            f"{data_dir}: no embedded online store here; run `mtrank features materialize "
            f"--data {data_dir}` first"
        )
    embedded.start()
    client = embedded.client(timeout, retry)
    return RedisOnlineStore(
        client,
        namespace=namespace,
        description=f"embedded store {embedded.directory.resolve()}",
        retry_after=retry_after,
        embedded=embedded,
    )


def redact(url: str) -> str:
    """`url` with its password replaced by '***', for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def _scan(client: redis.Redis, pattern: bytes) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=5000))
