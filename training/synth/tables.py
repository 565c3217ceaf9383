"""The Arrow tables `mtrank synth` writes: users, items, the impression log, and its time split.

Ids are strings (`u<n>`, `i<n>`), categorical values the vocabulary's strings; the impression log
carries the drawn labels and the true probabilities they were drawn from (`p_click`,
`p_conversion`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from training.synth.config import Rng
from training.synth.impressions import DAYS, START_TIMESTAMP, Impressions, click_logit
from training.synth.true_model import TrueModel, sigmoid
from training.synth.vocabulary import (
    AGE_BUCKETS,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    GENDERS,
    brand_names,
)

SPLITS = (("train", 0.0, 0.8), ("val", 0.8, 0.9), ("test", 0.9, 1.0))


def _names(prefix: str, count: int) -> pa.Array:
    return pa.array([f"{prefix}{n}" for n in range(count)], type=pa.string())


def _take(vocabulary: Sequence[str] | pa.Array, index: np.ndarray) -> pa.Array:
    """Strings of `vocabulary` at `index`, as a plain (not dictionary-encoded) string column."""
    values = vocabulary if isinstance(vocabulary, pa.Array) else pa.array(vocabulary, pa.string())
    return values.take(pa.array(index))


def users_table(model: TrueModel) -> pa.Table:
    """users.parquet: ids, demographics, activity and recent items (item ids, most recent last)."""
    users = model.users
    item_names = _names("i", len(model.items.category))
    recent = pa.ListArray.from_arrays(
        pa.array(users.recent_offsets.astype(np.int32)), _take(item_names, users.recent)
    )
    return pa.table(
        {
            "user_id": _names("u", len(users.age)),
            "age_bucket": _take(AGE_BUCKETS, users.age),
            "gender": _take(GENDERS, users.gender),
            "country": _take(COUNTRIES, users.country),
            "activity": pa.array(users.activity.astype(np.float32)),
            "recent_items": recent,
        }
    )


def items_table(model: TrueModel) -> pa.Table:
    """items.parquet: ids, category, brand, price and popularity."""
    items = model.items
    return pa.table(
        {
            "item_id": _names("i", len(items.category)),
            "category": _take(CATEGORIES, items.category),
            "brand": _take(brand_names(), items.brand),
            "price": pa.array(items.price.astype(np.float32)),
            "popularity": pa.array(items.popularity.astype(np.float32)),
        }
    )


def impressions_table(model: TrueModel, imp: Impressions, rng: Rng) -> pa.Table:
    """The impression log: ids, timestamp, context, drawn labels and the true probabilities."""
    p_click = sigmoid(click_logit(model, imp)).astype(np.float32)
    p_conv = sigmoid(model.conversion_logit(imp.user, imp.item, imp.device)).astype(np.float32)
    click = rng.random(len(p_click)) < p_click
    conversion = click & (rng.random(len(p_conv)) < p_conv)
    return pa.table(
        {
            "user_id": _take(_names("u", len(model.users.age)), imp.user),
            "item_id": _take(_names("i", len(model.items.category)), imp.item),
            "timestamp": pa.array(imp.timestamp, type=pa.int64()),
            "device": _take(DEVICES, imp.device),
            "hour": pa.array(imp.hour.astype(np.int32)),
            "position": pa.array(imp.position.astype(np.int32)),
            "click": pa.array(click.astype(np.int8)),
            "conversion": pa.array(conversion.astype(np.int8)),
            "p_click": pa.array(p_click),
            "p_conversion": pa.array(p_conv),
        }
    )


def split_by_time(table: pa.Table) -> dict[str, pa.Table]:
    """train/val/test: the first 80%, next 10% and last 10% of the time span (rows sorted by time)."""
    timestamp = table.column("timestamp").to_numpy()
    span_end = START_TIMESTAMP + DAYS * 86_400
    parts = {}
    for name, start, end in SPLITS:
        low = START_TIMESTAMP + start * (span_end - START_TIMESTAMP)
        high = START_TIMESTAMP + end * (span_end - START_TIMESTAMP)
        first, last = np.searchsorted(timestamp, [low, high], side="left")
        if end == 1.0:
            last = len(timestamp)
        parts[name] = table.slice(int(first), int(last - first))
    return parts
