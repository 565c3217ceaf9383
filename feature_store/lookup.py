"""One request's read, without I/O: which keys to fetch, and how replies become `OnlineFeatures`.

The store sends the keys of `Lookup.keys(version)` together with a read of the version pointer in
one round trip, and hands the replies to `Lookup.finish` with the version's `Layout` (its record
formats). Values the in-process caches hold (the stored bytes, `feature_store.cache`) are not
fetched; `finish` puts the fetched values in their places among the cached ones and decodes the
items with one `Record.decode` call (one structured array, in request order), then remembers the
fetched values in the caches. A cached value had its version's record size when it was fetched,
so a corrupt value is always a fetched one, and `CorruptValue` names its key. Without an item
cache (the default) the items are planned as a whole, with no per-item step: every one of them is
fetched, in request order, and the replies are decoded as they came.
"""

from __future__ import annotations

from collections.abc import Sequence

from feature_store.cache import MISSING, EntityCache, Missing
from feature_store.keys import entity_prefix
from feature_store.online_features import OnlineFeatures
from feature_store.records import Layout

_CACHED = b"(cached)"
"""The key `Record.decode` is given for a cached value: never shown, since cached values decode."""


class Lookup:
    """The user and candidate items of one request, split into cached values and keys to fetch."""

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
        # With an item cache: the cached item values in request order (None where fetched) and
        # the positions of the items to fetch. Without one, every item is fetched: no per-item step.
        self._items: list[bytes | None] = []
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
        """The lookup's result from the `blobs` at `keys` (as `keys(namespace, version)` gave)
        and the cached values, stored in `version`'s `layout`.

        `version` None means nothing was ever materialized: every row is absent.
        """
        if version is None:
            n = len(self.item_ids)
            return OnlineFeatures(
                self.user_id, self.item_ids, layout, None, layout.item.empty(n), range(n)
            )
        user_blob = blobs[0] if self._fetch_user else self._user
        user_key = keys[0] if self._fetch_user else _CACHED
        fetched_items = blobs[1:] if self._fetch_user else blobs
        item_keys = keys[1:] if self._fetch_user else keys
        if self._item_cache is None:  # every item was fetched, in request order
            item_blobs, all_item_keys = fetched_items, item_keys
        else:
            merged = list(self._items)
            merged_keys = [_CACHED] * len(merged)
            for position, key, blob in zip(
                self._item_positions, item_keys, fetched_items, strict=True
            ):
                merged[position] = blob
                merged_keys[position] = key
            item_blobs, all_item_keys = merged, merged_keys
        user_row = None if user_blob is None else layout.user.decode([user_blob], [user_key])
        item_rows = layout.item.decode(item_blobs, all_item_keys)
        absent = (
            [i for i, blob in enumerate(item_blobs) if blob is None] if None in item_blobs else []
        )
        # Every value had its record's size: the fetched ones may now be cached.
        if self._fetch_user and self._user_cache is not None:
            self._user_cache.put(version, self.user_id, user_blob)
        if self._item_cache is not None:
            for item_id, blob in zip(self._fetch_items, fetched_items, strict=True):
                self._item_cache.put(version, item_id, blob)
        return OnlineFeatures(self.user_id, self.item_ids, layout, user_row, item_rows, absent)
