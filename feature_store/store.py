"""The online store interface: what serving asks of any store, and what it gets back.

Serving calls `get_online_features(user_id, item_ids)` once per request. An implementation fetches
the user and every candidate item in one round trip and returns `OnlineFeatures`, whose `columns`
turns the stored rows into one list of raw values per model feature, defaults filled in. When the
store cannot be reached in time it raises `StoreUnavailable`; serving then uses
`OnlineFeatures.unavailable(...)`, which is all defaults and marked degraded. Rows may be shared
with the store's in-process cache: read them, never mutate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from feature_store.codec import Row, Value
from ranker.schema import Schema


@dataclass(frozen=True)
class OnlineFeatures:
    """The stored features of one user and a list of candidate items, as read in one round trip.

    `user` is None when the store has no row for the user; `items[i]` is None when it has none for
    `item_ids[i]`. `degraded` is True when the store was unreachable and nothing was read.
    """

    user_id: str
    item_ids: Sequence[str]
    user: Row | None
    items: Sequence[Row | None]
    degraded: bool = False

    @classmethod
    def unavailable(cls, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        """What serving uses when the store is down: nothing found, every feature at its default."""
        return cls(user_id, item_ids, None, [None] * len(item_ids), degraded=True)

    @property
    def missing_user(self) -> bool:
        return self.user is None

    @property
    def missing_items(self) -> list[str]:
        """The ids of the candidate items the store has no row for, in request order."""
        return [
            item_id for item_id, row in zip(self.item_ids, self.items, strict=True) if row is None
        ]

    def columns(self, schema: Schema) -> dict[str, list[Value]]:
        """One list of `len(item_ids)` raw values per user and item feature of `schema`.

        The entity keys come from the request (`user_id` repeated, then `item_ids`), never from the
        store; a feature the store lacks gets `Feature.missing_value`. User values are repeated
        once per item. Sequences are returned unpadded: padding to `max_length` is the batcher's.
        """
        n = len(self.item_ids)
        out: dict[str, list[Value]] = {}
        user = self.user or {}
        for feature in schema.entity_features("user"):
            if feature.name == schema.keys.user:
                out[feature.name] = [self.user_id] * n
            else:
                out[feature.name] = [user.get(feature.name, feature.missing_value)] * n
        for feature in schema.entity_features("item"):
            if feature.name == schema.keys.item:
                out[feature.name] = list(self.item_ids)
                continue
            default = feature.missing_value
            name = feature.name
            out[name] = [default if row is None else row.get(name, default) for row in self.items]
        return out


class OnlineStore(Protocol):
    """What serving asks of an online feature store (`RedisOnlineStore` is the implementation).

    Rows are written by materialization (`feature_store.writer`), read here per request.
    """

    async def get_online_features(self, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        """Read one user and all `item_ids` in one round trip; raise StoreUnavailable when down."""
        ...

    async def metadata(self) -> dict[str, Any] | None:
        """The record of the live materialization, or None if nothing was materialized."""
        ...

    async def ping(self) -> None:
        """Return if the store answers, raise StoreUnavailable if not."""
        ...

    async def aclose(self) -> None:
        """Release connections (and stop an embedded server nobody else uses)."""
        ...
