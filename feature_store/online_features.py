"""The online store interface: what serving asks of any store, and what it gets back.

Serving calls `get_online_features(user_id, item_ids)` once per request. An implementation fetches
the user and every candidate item in one round trip and returns `OnlineFeatures`, whose `columns`
turns the stored records into one array per model feature, laid out as the model's signature takes
it (defaults filled in). When the store cannot be reached in time it raises `StoreUnavailable`;
serving then uses `OnlineFeatures.unavailable(...)`, which is all defaults and marked degraded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from feature_store.records import Layout, Record, Row, Value
from ranker.schema import Feature, Schema


@dataclass(frozen=True)
class OnlineFeatures:
    """The stored features of one user and a list of candidate items, as read in one round trip.

    Records are kept as stored (`records.Record`): `user_row` is the user's record (a structured
    array of one, in `layout.user`), None when the store has no row for the user; `item_rows` holds
    one record per candidate in `layout.item`, in request order, all values missing for the items
    at `absent_items` (the positions the store has no row for). `degraded` is True when the store
    was unreachable and nothing was read. `user` and `items` give the same rows by feature name,
    for inspection; serving reads `columns(schema)`. The arrays are read-only views of the bytes
    Redis returned.
    """

    user_id: str
    item_ids: Sequence[str]
    layout: Layout
    user_row: np.ndarray | None
    item_rows: np.ndarray
    absent_items: Sequence[int] = ()
    degraded: bool = False

    @classmethod
    def unavailable(cls, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        """What serving uses when the store is down: nothing found, every feature at its default."""
        n = len(item_ids)
        rows = Record().empty(n)
        return cls(user_id, item_ids, Layout(), None, rows, range(n), degraded=True)

    @classmethod
    def from_rows(
        cls,
        user_id: str,
        item_ids: Sequence[str],
        user: Mapping[str, Value] | None,
        items: Sequence[Mapping[str, Value] | None],
    ) -> OnlineFeatures:
        """The features of rows given by name (tests, tools), stored as the store would;
        absent rows are None."""
        layout = Layout(
            user=Record.infer([] if user is None else [user]),
            item=Record.infer(row for row in items if row is not None),
        )
        user_row = (
            None if user is None else layout.user.decode(layout.user.encode([user]), [b"user"])
        )
        blobs = [None if row is None else layout.item.encode([row])[0] for row in items]
        keys = [f"item:{item_id}".encode() for item_id in item_ids]
        absent = [i for i, row in enumerate(items) if row is None]
        return cls(user_id, item_ids, layout, user_row, layout.item.decode(blobs, keys), absent)

    @property
    def user(self) -> Row | None:
        """The user's stored features by name (missing ones left out), None without a row."""
        return None if self.user_row is None else self.layout.user.values(self.user_row[0])

    @property
    def items(self) -> list[Row | None]:
        """Each candidate's stored features by name, like `user`, in request order."""
        absent = set(self.absent_items)
        return [
            None if i in absent else self.layout.item.values(row)
            for i, row in enumerate(self.item_rows)
        ]

    @property
    def missing_user(self) -> bool:
        return self.user_row is None

    @property
    def missing_items(self) -> list[str]:
        """The ids of the candidate items the store has no row for, in request order."""
        return [self.item_ids[i] for i in self.absent_items]

    def columns(self, schema: Schema) -> dict[str, np.ndarray]:
        """One array of `len(item_ids)` rows per user and item feature of `schema`, as the
        model's signature takes it: numeric float32 with missing values at the feature's default,
        categorical bytes ("" if missing), sequences [rows, max_length] of bytes, the first
        `max_length` non-empty elements padded with "" (the training pipeline's convention).

        The entity keys come from the request (`user_id`, then `item_ids`), never from the store.
        A feature this version does not store, or stores with another type than the schema's,
        gets its default. User values are broadcast (read-only views that repeat one row); item
        columns are views of the stored records where the layout allows (categorical), else one
        numpy operation each.
        """
        n = len(self.item_ids)
        out: dict[str, np.ndarray] = {}
        user_rows = self.user_row if self.user_row is not None else self.layout.user.empty(1)
        for feature in schema.entity_features("user"):
            if feature.name == schema.keys.user:
                out[feature.name] = _repeat(np.array([self.user_id], dtype=object), n)
                continue
            one = _column(feature, self.layout.user, user_rows)
            out[feature.name] = _repeat(one, n)
        for feature in schema.entity_features("item"):
            if feature.name == schema.keys.item:
                out[feature.name] = np.asarray(self.item_ids, dtype=object)
            else:
                out[feature.name] = _column(feature, self.layout.item, self.item_rows)
        return out


def _repeat(one: np.ndarray, n: int) -> np.ndarray:
    """The single row of `one` repeated `n` times: a read-only view with a zero stride, as
    `np.broadcast_to` gives, built directly (a tenth of its cost, paid per user feature)."""
    row = np.ascontiguousarray(one[:1]).reshape(one.shape[1:])
    out = np.ndarray((n, *row.shape), row.dtype, buffer=row, strides=(0, *row.strides))
    out.flags.writeable = False
    return out


def _column(feature: Feature, record: Record, rows: np.ndarray) -> np.ndarray:
    """`feature`'s values in `rows` (records of `record`), laid out for the model (see `columns`)."""
    n = len(rows)
    stored = record.column(feature.name)
    if stored is None or stored.type != feature.type:
        if feature.type == "numeric":
            return np.full(n, feature.missing_value, dtype=np.float32)
        if feature.type == "categorical":
            return np.zeros(n, dtype="S1")
        assert feature.max_length is not None
        return np.zeros((n, feature.max_length), dtype="S1")
    values = rows[feature.name]
    if feature.type == "numeric":
        default = np.float32(cast(float, feature.missing_value))
        return np.where(np.isnan(values), default, values)
    if feature.type == "categorical":
        return values
    assert feature.max_length is not None
    if stored.length >= feature.max_length:
        return values[:, : feature.max_length]
    padded = np.zeros((n, feature.max_length), dtype=values.dtype)
    padded[:, : stored.length] = values
    return padded


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
