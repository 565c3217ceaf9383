"""`mtrank features`: the online store's commands.

    mtrank features materialize --data DIR [--redis URL] [--namespace NS] [--keep-stale]
    mtrank features get (--data DIR | --redis URL) --user ID [--items ID,ID,...]

Without `--redis`, the URL comes from REDIS_URL; without either, the store is the embedded one
under DIR. `materialize` prints progress on stderr and, as its last stdout line, one JSON object
`{"store", "namespace", "seconds", "user": {"rows", "stale_deleted"}, "item": {...}}`.
`get` prints the stored rows (null where absent) as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ranker.errors import MtrankError

if TYPE_CHECKING:
    from feature_store.redis_store import RedisOnlineStore

MATERIALIZE_TIMEOUT_S = 60.0


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
        "--keep-stale",
        action="store_true",
        help="keep stored entities that are no longer in the files (default: delete them)",
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
    from feature_store.codec import check_namespace

    try:
        return check_namespace(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    with _open(args, create=True, timeout=MATERIALIZE_TIMEOUT_S) as store:
        reports = write_entity_files(
            store, files, delete_stale=not args.keep_stale, progress=_Throttled()
        )
    summary: dict[str, object] = {
        "store": store.description,
        "namespace": store.namespace,
        "seconds": round(time.monotonic() - started, 3),
    }
    for report in reports:
        summary[report.entity] = {"rows": report.rows, "stale_deleted": report.stale_deleted}
    print(json.dumps(summary))
    return 0


def _get(args: argparse.Namespace) -> int:
    item_ids = [i for i in args.items.split(",") if i]
    with _open(args) as store:
        found = store.get_online_features(args.user, item_ids)
    print(json.dumps({"user": found.user, "items": dict(zip(item_ids, found.items, strict=True))}))
    return 0


def _open(
    args: argparse.Namespace, *, create: bool = False, timeout: float = 1.0
) -> RedisOnlineStore:
    """The store at --redis (or $REDIS_URL), else the embedded store under --data."""
    from feature_store.redis_store import open_store

    url = args.redis or os.environ.get("REDIS_URL") or None
    if url is None and args.data is None:
        raise MtrankError("give --data DIR (embedded store) or --redis URL (or set REDIS_URL)")
    data_dir = None if url else args.data
    return open_store(
        url=url, data_dir=data_dir, create=create, namespace=args.namespace, timeout=timeout
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
