"""The schema.yaml of a synthetic click log: its features by entity; ctr, cvr and ctcvr."""

from __future__ import annotations

import math
from typing import Any

from training.synth.config import SynthConfig
from training.synth.vocabulary import (
    AGE_BUCKETS,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    GENDERS,
    HOURS,
    brand_names,
)
from training.synth.world import MAX_RECENT


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (and >= 1)."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def schema_dict(config: SynthConfig) -> dict[str, Any]:
    """The schema.yaml of a synthetic click log: features by entity, ctr, cvr and ctcvr."""
    hours = [str(h) for h in range(HOURS)]
    features: list[dict[str, Any]] = [
        {"name": "user_id", "type": "categorical", "entity": "user",
         "num_buckets": next_power_of_two(2 * config.users), "embedding_dim": 16},
        {"name": "age_bucket", "type": "categorical", "entity": "user",
         "vocabulary": list(AGE_BUCKETS), "embedding_dim": 4},
        {"name": "gender", "type": "categorical", "entity": "user",
         "vocabulary": list(GENDERS), "embedding_dim": 4},
        {"name": "country", "type": "categorical", "entity": "user",
         "vocabulary": list(COUNTRIES), "embedding_dim": 8},
        {"name": "activity", "type": "numeric", "entity": "user", "transform": "log1p"},
        {"name": "recent_items", "type": "sequence", "entity": "user",
         "max_length": MAX_RECENT, "shared_embedding": "item_id"},
        {"name": "item_id", "type": "categorical", "entity": "item",
         "num_buckets": next_power_of_two(2 * config.items), "embedding_dim": 16},
        {"name": "category", "type": "categorical", "entity": "item",
         "vocabulary": list(CATEGORIES), "embedding_dim": 8},
        {"name": "brand", "type": "categorical", "entity": "item",
         "vocabulary": brand_names(), "embedding_dim": 8},
        {"name": "price", "type": "numeric", "entity": "item", "transform": "log1p"},
        {"name": "popularity", "type": "numeric", "entity": "item", "transform": "log1p"},
        {"name": "device", "type": "categorical", "entity": "context",
         "vocabulary": list(DEVICES), "embedding_dim": 4},
        {"name": "hour", "type": "categorical", "entity": "context",
         "vocabulary": hours, "embedding_dim": 4},
        {"name": "position", "type": "numeric", "entity": "context", "default": 1.0},
    ]  # fmt: skip
    return {
        "features": features,
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "condition": "click"},
        ],
        "products": [{"name": "ctcvr", "of": ["ctr", "cvr"]}],
    }
