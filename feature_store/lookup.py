"""One request's read, without I/O: which keys to fetch, and how replies become `OnlineFeatures`.

The store sends the keys of `Lookup.keys(version)` together with a read of the version pointer in
one round trip, and hands the replies to `Lookup.finish` with the version's `Layout` (its column
order). Values the in-process caches hold (msgpack bytes, `feature_store.cache`) are not fetched;
`finish` puts the fetched values in their places among the cached ones and decodes them all with
one `codec.decode_rows` call, user first, then items in request order, and then remembers the
fetched values in the caches. A cached value decoded to its version's width when it was fetched,
so a corrupt value is always a fetched one, and `CorruptValue` names its key. Without an item
cache (the default) the items are planned as a whole, with no per-item step: every one of them is
fetched, in request order, and the replies are decoded as they came (a cached user in front).
"""

from __future__ import annotations

from collections.abc import Sequence

from feature_store.cache import MISSING, EntityCache, Missing
from feature_store.codec import Layout, decode_rows, entity_prefix
from feature_store.store import OnlineFeatures

_CACHED = b"(cached)"
"""The key `decode_rows` is given for a cached value: never shown, since cached values decode."""


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
            return OnlineFeatures(
                self.user_id, self.item_ids, layout, None, [None] * len(self.item_ids)
            )
        # Every value of the request, user first, and the key of each (_CACHED where cached).
        user_blob = blobs[0] if self._fetch_user else self._user
        fetched_items: Sequence[bytes | None] = ()  # with an item cache: the fetched item values
        all_blobs: Sequence[bytes | None]
        all_keys: Sequence[bytes]
        if self._item_cache is None:  # every item was fetched, in request order
            if self._fetch_user:
                all_blobs, all_keys = blobs, keys
            else:
                all_blobs, all_keys = [user_blob, *blobs], [_CACHED, *keys]
        else:
            merged = [user_blob, *self._items]
            merged_keys = [keys[0] if self._fetch_user else _CACHED]
            merged_keys += [_CACHED] * len(self._items)
            item_keys = keys[1:] if self._fetch_user else keys
            fetched_items = blobs[1:] if self._fetch_user else blobs
            for position, key, blob in zip(
                self._item_positions, item_keys, fetched_items, strict=True
            ):
                merged[position + 1] = blob
                merged_keys[position + 1] = key
            all_blobs, all_keys = merged, merged_keys
        widths = [len(layout.user)] + [len(layout.item)] * len(self.item_ids)
        rows = decode_rows(all_blobs, all_keys, widths)
        # Every value decoded to its width: the fetched ones may now be cached.
        if self._fetch_user and self._user_cache is not None:
            self._user_cache.put(version, self.user_id, user_blob)
        if self._item_cache is not None:
            for item_id, blob in zip(self._fetch_items, fetched_items, strict=True):
                self._item_cache.put(version, item_id, blob)
        return OnlineFeatures(self.user_id, self.item_ids, layout, rows[0], rows[1:])
