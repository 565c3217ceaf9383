"""`mtrank features`: the online store's commands.

    mtrank features materialize --data DIR [--redis URL] [--namespace NS] [--ttl SECONDS]
    mtrank features get (--data DIR | --redis URL) --user ID [--items ID,ID,...]

Without `--redis`, the URL comes from REDIS_URL; without either, the store is the embedded one
under DIR. `materialize` prints progress on stderr and, as its last stdout line, one JSON object
`{"store", "namespace", "version", "previous_version", "deleted_keys", "seconds",
"user": {"rows"}, "item": {"rows"}}`: `version` is the version it flipped to.
`get` prints the stored rows of the live version (null where absent) as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ranker.errors import MtrankError

if TYPE_CHECKING:
    from feature_store.online_features import OnlineFeatures
    from feature_store.redis_store import RedisOnlineStore
    from feature_store.writer import StoreWriter

MATERIALIZE_TIMEOUT_S = 60.0
GET_TIMEOUT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    mat = actions.add_parser(
        "materialize",
        help="load DIR/users.parquet and DIR/items.parquet into the online store",
        description="Load DIR/users.parquet and DIR/items.parquet (as DIR/schema.yaml describes "
        "them) into Redis, or into the embedded store under DIR.",
    )
    mat.add_argument("--data", required=True, type=Path, metavar="DIR", help="data directory")
    _add_store_arguments(mat)
    mat.add_argument(
        "--ttl",
        type=_positive_int,
        metavar="SECONDS",
        help="rows expire this many seconds after they are written (default: never)",
    )
    get = actions.add_parser(
        "get",
        help="print the stored features of a user and items",
        description="Print the stored features of one user and some items as JSON.",
    )
    get.add_argument("--data", type=Path, metavar="DIR", help="data directory of an embedded store")
    _add_store_arguments(get)
    get.add_argument("--user", required=True, help="user id")
    get.add_argument("--items", default="", help="comma-separated item ids")


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="Redis URL, e.g. redis://127.0.0.1:6379/0 (default: $REDIS_URL, else embedded)",
    )
    parser.add_argument(
        "--namespace",
        default="mtrank",
        type=_namespace,
        help="key prefix in Redis (default: mtrank)",
    )


def _namespace(value: str) -> str:
    from feature_store.keys import check_namespace

    try:
        return check_namespace(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds >= 1, got {value!r}")
    return number


def run(args: argparse.Namespace) -> int:
    from feature_store.errors import StoreUnavailable

    try:
        if args.action == "materialize":
            return _materialize(args)
        return _get(args)
    except StoreUnavailable as err:
        raise MtrankError(f"store unreachable: {err}") from None


def _materialize(args: argparse.Namespace) -> int:
    from feature_store.materialize import load_entity_files, write_entity_files
    from ranker.schema import Schema

    if not args.data.is_dir():
        raise MtrankError(f"{args.data}: no such data directory")
    started = time.monotonic()
    files = load_entity_files(args.data, Schema.load(args.data / "schema.yaml"))
    with _open_writer(args) as writer:
        done = write_entity_files(writer, files, progress=_Throttled(), ttl_s=args.ttl)
    summary: dict[str, object] = {
        "store": writer.description,
        "namespace": writer.namespace,
        "version": done.version,
        "previous_version": done.previous,
        "deleted_keys": done.deleted_keys,
        "seconds": round(time.monotonic() - started, 3),
    }
    for report in done.entities:
        summary[report.entity] = {"rows": report.rows, "record_bytes": report.record_bytes}
    print(json.dumps(summary))
    return 0


def _get(args: argparse.Namespace) -> int:
    item_ids = [i for i in args.items.split(",") if i]
    found = asyncio.run(_lookup(_open_reader(args), args.user, item_ids))
    print(json.dumps({"user": found.user, "items": dict(zip(item_ids, found.items, strict=True))}))
    return 0


async def _lookup(store: RedisOnlineStore, user_id: str, item_ids: list[str]) -> OnlineFeatures:
    async with store:
        return await store.get_online_features(user_id, item_ids)


def _url(args: argparse.Namespace) -> str | None:
    """--redis, else $REDIS_URL, else None (the embedded store under --data)."""
    from feature_store.connection import redis_url

    url = redis_url(args.redis)
    if url is None and args.data is None:
        raise MtrankError("give --data DIR (embedded store) or --redis URL (or set REDIS_URL)")
    return url


def _open_writer(args: argparse.Namespace) -> StoreWriter:
    from feature_store.writer import open_writer

    url = _url(args)
    return open_writer(
        url=url,
        data_dir=None if url else args.data,
        namespace=args.namespace,
        timeout=MATERIALIZE_TIMEOUT_S,
    )


def _open_reader(args: argparse.Namespace) -> RedisOnlineStore:
    from feature_store.cache import CacheConfig
    from feature_store.redis_store import open_async_store

    url = _url(args)
    return open_async_store(
        url=url,
        data_dir=None if url else args.data,
        namespace=args.namespace,
        timeout=GET_TIMEOUT_S,
        cache=CacheConfig.off(),
    )


class _Throttled:
    """Print progress to stderr at most once a second, and always an entity's last line."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._last = 0.0

    def __call__(self, entity: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self._last >= self.every_s:
            print(f"{entity}s: {done}/{total} rows", file=sys.stderr, flush=True)
            self._last = now
