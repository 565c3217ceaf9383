"""A small click-log schema and learnable data for the model tests (no files, no Redis)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

import ranker  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ranker.schema import Schema

CLICK_LOG_SCHEMA = """
features:
  - {name: user_id, type: categorical, entity: user, num_buckets: 64, embedding_dim: 4}
  - {name: item_id, type: categorical, entity: item, num_buckets: 32, embedding_dim: 4}
  - {name: device, type: categorical, entity: context, vocabulary: [ios, android, web], embedding_dim: 2}
  - {name: price, type: numeric, entity: item, transform: log1p}
  - {name: recent_items, type: sequence, entity: user, max_length: 4, shared_embedding: item_id}
tasks:
  - {name: ctr, label: click}
  - {name: cvr, label: conversion, condition: click}
products:
  - {name: ctcvr, of: [ctr, cvr]}
"""


def click_log_schema(**overrides: Any) -> Schema:
    raw = yaml.safe_load(CLICK_LOG_SCHEMA)
    raw.update(overrides)
    return Schema.from_dict(raw)


@pytest.fixture(scope="session")
def schema() -> Schema:
    return click_log_schema()


def make_data(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features and labels where click and conversion follow a known logistic model of the features."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, n)
    items = rng.integers(0, 20, n)
    device = rng.choice(["ios", "android", "web"], n)
    price = rng.lognormal(1.0, 0.8, n).astype(np.float32)
    user_taste = np.linspace(-1.5, 1.5, 40)[users]
    item_appeal = np.linspace(-1.0, 1.0, 20)[items]
    click_logit = -1.0 + 1.5 * user_taste * item_appeal + item_appeal + 0.5 * (device == "ios")
    click = (rng.random(n) < 1 / (1 + np.exp(-click_logit))).astype(np.float32)
    conv_logit = -0.5 - 0.8 * np.log1p(price) + user_taste
    conversion = click * (rng.random(n) < 1 / (1 + np.exp(-conv_logit)))
    recent = np.array([[f"i{j}" for j in rng.integers(0, 20, 2)] + ["", ""] for _ in range(n)])
    features = {
        "user_id": np.array([f"u{u}" for u in users]),
        "item_id": np.array([f"i{i}" for i in items]),
        "device": device,
        "price": price,
        "recent_items": recent,
    }
    return features, {"click": click, "conversion": conversion.astype(np.float32)}


def assert_config_round_trips(layer: Any) -> Any:
    """`from_config(get_config())` gives the same config, and Keras' (de)serialization the same
    class: what every layer test checks of its layers. Returns the clone from the config."""
    from ranker.keras_compat import keras

    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert type(keras.layers.deserialize(keras.layers.serialize(layer))) is type(layer)
    return clone


# the click log's two tasks and a regression one: what a test's 1, 2 or 3 tasks are
THREE_TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "condition": "click"},
    {"name": "dwell", "label": "dwell_seconds", "type": "regression"},
]


def first_tasks(
    count: int, rows: int, seed: int = 3
) -> tuple[Schema, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The click-log schema with the first `count` of THREE_TASKS (no products), and `rows` rows
    of `make_data` with the regression task's label (dwell_seconds = 3 log1p(price))."""
    schema = click_log_schema(tasks=THREE_TASKS[:count], products=[])
    features, labels = make_data(rows, seed=seed)
    labels["dwell_seconds"] = (np.log1p(features["price"]) * 3.0).astype(np.float32)
    return schema, features, labels


@pytest.fixture(scope="session")
def data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return make_data(2048)
