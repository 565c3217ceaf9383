"""The online store interface: what serving asks of any store, and what it gets back.

Serving calls `get_online_features(user_id, item_ids)` once per request. An implementation fetches
the user and every candidate item in one round trip and returns `OnlineFeatures`, whose `columns`
turns the stored rows into one list of raw values per model feature, defaults filled in. When the
store cannot be reached in time it raises `StoreUnavailable`; serving then uses
`OnlineFeatures.unavailable(...)`, which is all defaults and marked degraded. Rows are decoded
afresh for each lookup (the cache keeps the stored bytes), but treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from feature_store.codec import Layout, Row, Value, Values
from ranker.schema import Schema


@dataclass(frozen=True)
class OnlineFeatures:
    """The stored features of one user and a list of candidate items, as read in one round trip.

    Rows are kept as stored: `user_values` and each of `item_values` list the values in the order
    of `layout.user` / `layout.item` (None where missing). `user_values` is None when the store
    has no row for the user; `item_values[i]` is None when it has none for `item_ids[i]`.
    `degraded` is True when the store was unreachable and nothing was read. `user` and `items`
    give the same rows by feature name, for inspection; serving reads `columns(schema)`.
    """

    user_id: str
    item_ids: Sequence[str]
    layout: Layout
    user_values: Values | None
    item_values: Sequence[Values | None]
    degraded: bool = False

    @classmethod
    def unavailable(cls, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        """What serving uses when the store is down: nothing found, every feature at its default."""
        return cls(user_id, item_ids, Layout(), None, [None] * len(item_ids), degraded=True)

    @classmethod
    def from_rows(
        cls,
        user_id: str,
        item_ids: Sequence[str],
        user: Mapping[str, Value] | None,
        items: Sequence[Mapping[str, Value] | None],
    ) -> OnlineFeatures:
        """The features of rows given by name (tests, tools); absent rows are None."""
        layout = Layout(user=_names([user]), item=_names(items))
        return cls(
            user_id,
            item_ids,
            layout,
            _values(user, layout.user),
            [_values(row, layout.item) for row in items],
        )

    @property
    def user(self) -> Row | None:
        """The user's stored features by name (missing ones left out), None without a row."""
        return _by_name(self.user_values, self.layout.user)

    @property
    def items(self) -> list[Row | None]:
        """Each candidate's stored features by name, like `user`, in request order."""
        return [_by_name(values, self.layout.item) for values in self.item_values]

    @property
    def missing_user(self) -> bool:
        return self.user_values is None

    @property
    def missing_items(self) -> list[str]:
        """The ids of the candidate items the store has no row for, in request order."""
        return [
            item_id
            for item_id, values in zip(self.item_ids, self.item_values, strict=True)
            if values is None
        ]

    def columns(self, schema: Schema) -> dict[str, list[Value]]:
        """One list of `len(item_ids)` raw values per user and item feature of `schema`.

        The entity keys come from the request (`user_id` repeated, then `item_ids`), never from the
        store; a feature the store lacks gets `Feature.missing_value`. User values are repeated
        once per item. Sequences are returned unpadded: padding to `max_length` is the batcher's.
        Item columns are cut out of the stored arrays column-wise (`zip(*rows)`), not row by row.
        """
        n = len(self.item_ids)
        out: dict[str, list[Value]] = {}
        user = self.user_values
        user_at = {name: at for at, name in enumerate(self.layout.user)}
        for feature in schema.entity_features("user"):
            if feature.name == schema.keys.user:
                out[feature.name] = [self.user_id] * n
                continue
            at = user_at.get(feature.name)
            value = None if user is None or at is None else user[at]
            out[feature.name] = [feature.missing_value if value is None else value] * n
        stored = self._item_columns()
        for feature in schema.entity_features("item"):
            if feature.name == schema.keys.item:
                out[feature.name] = list(self.item_ids)
                continue
            default = feature.missing_value
            values = stored.get(feature.name)
            if values is None:  # not stored at all in this version
                out[feature.name] = [default] * n
            else:
                out[feature.name] = [default if v is None else v for v in values]
        return out

    def _item_columns(self) -> dict[str, Sequence[Value | None]]:
        """The stored item values by feature: a tuple of `len(item_ids)` values (None: missing)."""
        rows = self.item_values
        if None in rows:  # absent items: a row of nils each
            nils: Values = [None] * len(self.layout.item)
            rows = [nils if values is None else values for values in rows]
        return dict(zip(self.layout.item, zip(*rows, strict=True), strict=False))


def _names(rows: Sequence[Mapping[str, Value] | None]) -> tuple[str, ...]:
    """Every feature name `rows` use, in order of first use."""
    return tuple(dict.fromkeys(name for row in rows if row is not None for name in row))


def _values(row: Mapping[str, Value] | None, columns: Sequence[str]) -> Values | None:
    return None if row is None else [row.get(name) for name in columns]


def _by_name(values: Values | None, columns: Sequence[str]) -> Row | None:
    if values is None:
        return None
    return {name: v for name, v in zip(columns, values, strict=True) if v is not None}


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
