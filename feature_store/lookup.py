"""One request's read, without I/O: which keys to fetch, and how replies become `OnlineFeatures`.

The store sends the keys of `Lookup.keys(version)` together with a read of the version pointer in
one round trip, and hands the replies to `Lookup.finish` with the version's `Layout` (its column
order). Rows the in-process caches hold are not fetched; fetched rows are decoded and remembered
there.
"""

from __future__ import annotations

from collections.abc import Sequence

from feature_store.cache import MISSING, EntityCache, Missing
from feature_store.codec import Layout, StoredEntity, Values, decode_rows, entity_prefix
from feature_store.store import OnlineFeatures


class Lookup:
    """The user and candidate items of one request, split into cached rows and keys to fetch."""

    def __init__(
        self,
        user_id: str,
        item_ids: Sequence[str],
        *,
        user_cache: EntityCache | None = None,
        item_cache: EntityCache | None = None,
    ) -> None:
        self.user_id = user_id
        self.item_ids = item_ids
        self._caches: dict[StoredEntity, EntityCache | None] = {
            "user": user_cache,
            "item": item_cache,
        }
        ids = [user_id, *item_ids]
        self._rows: list[Values | None] = [None] * len(ids)
        self._wanted: list[tuple[int, StoredEntity, str]] = []  # (position, entity, id)
        for position, entity_id in enumerate(ids):
            entity: StoredEntity = "user" if position == 0 else "item"
            cache = self._caches[entity]
            cached = MISSING if cache is None else cache.get(entity_id)
            if isinstance(cached, Missing):
                self._wanted.append((position, entity, entity_id))
            else:
                self._rows[position] = cached

    @property
    def complete(self) -> bool:
        """True when the caches held every row: nothing to fetch."""
        return not self._wanted

    def keys(self, namespace: str, version: int) -> list[bytes]:
        """The keys of the rows to fetch from `version`, user first, then items in request order."""
        prefixes = {e: entity_prefix(namespace, version, e) for e in ("user", "item")}
        return [prefixes[entity] + entity_id.encode() for _, entity, entity_id in self._wanted]

    def finish(
        self,
        version: int | None,
        layout: Layout,
        keys: Sequence[bytes],
        blobs: Sequence[bytes | None],
    ) -> OnlineFeatures:
        """The lookup's result from the `blobs` at `keys` (as `keys(namespace, version)` gave),
        stored in `version`'s `layout`.

        `version` None means nothing was ever materialized: every row is absent.
        """
        rows = self._rows
        if version is not None and self._wanted:
            user_wanted = self._wanted[0][0] == 0
            widths = [len(layout.item)] * len(self._wanted)
            if user_wanted:
                widths[0] = len(layout.user)
            fetched = decode_rows(blobs, keys, widths)
            if len(fetched) == len(rows):  # nothing came from the caches: already in order
                rows = fetched
            else:
                rows = list(rows)
                for (position, _, _), row in zip(self._wanted, fetched, strict=True):
                    rows[position] = row
            if self._caches["user"] is not None or self._caches["item"] is not None:
                for (_, entity, entity_id), row in zip(self._wanted, fetched, strict=True):
                    cache = self._caches[entity]
                    if cache is not None:
                        cache.put(version, entity_id, row)
        return OnlineFeatures(self.user_id, self.item_ids, layout, rows[0], rows[1:])
