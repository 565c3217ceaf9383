"""One request's read, without I/O: which keys to fetch, and how replies become `OnlineFeatures`.

The store sends the keys of `Lookup.keys(version)` together with a read of the version pointer in
one round trip, and hands the replies to `Lookup.finish` with the version's `Layout` (its column
order). Rows the in-process caches hold are not fetched; fetched rows are decoded and remembered
there. Without an item cache (the default) the items are planned as a whole, with no per-item
step: every one of them is fetched, in request order.
"""

from __future__ import annotations

from collections.abc import Sequence

from feature_store.cache import MISSING, EntityCache, Missing
from feature_store.codec import Layout, Values, decode_rows, entity_prefix
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
        self._user_cache = user_cache
        self._item_cache = item_cache
        cached_user = MISSING if user_cache is None else user_cache.get(user_id)
        self._fetch_user = isinstance(cached_user, Missing)
        self._user = None if isinstance(cached_user, Missing) else cached_user
        # With an item cache: the cached rows in request order (None where not cached) and the
        # positions of the items to fetch. Without one, every item is fetched: no per-item step.
        self._items: list[Values | None] = []
        self._item_positions: list[int] = []
        self._fetch_items: Sequence[str] = item_ids
        if item_cache is not None:
            for position, item_id in enumerate(item_ids):
                cached = item_cache.get(item_id)
                if isinstance(cached, Missing):
                    self._item_positions.append(position)
                    self._items.append(None)
                else:
                    self._items.append(cached)
            self._fetch_items = [item_ids[position] for position in self._item_positions]

    @property
    def complete(self) -> bool:
        """True when the caches held every row: nothing to fetch."""
        return not self._fetch_user and not self._fetch_items

    def keys(self, namespace: str, version: int) -> list[bytes]:
        """The keys of the rows to fetch from `version`, user first, then items in request order."""
        item = entity_prefix(namespace, version, "item")
        keys = [item + item_id.encode() for item_id in self._fetch_items]
        if self._fetch_user:
            keys.insert(0, entity_prefix(namespace, version, "user") + self.user_id.encode())
        return keys

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
        if version is None:
            return OnlineFeatures(
                self.user_id, self.item_ids, layout, None, [None] * len(self.item_ids)
            )
        widths = [len(layout.item)] * len(self._fetch_items)
        if self._fetch_user:
            widths.insert(0, len(layout.user))
        fetched = decode_rows(blobs, keys, widths)
        user = self._user
        if self._fetch_user:
            user, fetched = fetched[0], fetched[1:]
            if self._user_cache is not None:
                self._user_cache.put(version, self.user_id, user)
        if self._item_cache is None:  # every item was fetched, in request order
            items = fetched
        else:
            items = list(self._items)
            for position, row in zip(self._item_positions, fetched, strict=True):
                items[position] = row
            for item_id, row in zip(self._fetch_items, fetched, strict=True):
                self._item_cache.put(version, item_id, row)
        return OnlineFeatures(self.user_id, self.item_ids, layout, user, items)
