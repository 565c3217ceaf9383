"""Raw values to signature tensors (serving.batcher): typing by the schema, defaults, padding."""

from __future__ import annotations

import numpy as np
import pytest

from feature_store.online_features import OnlineFeatures
from ranker.schema import Schema
from serving.batcher import FeatureBatcher, pad
from serving.errors import InvalidInput

SCHEMA = Schema.from_dict(
    {
        "features": [
            {"name": "user_id", "type": "categorical", "entity": "user", "num_buckets": 10},
            {"name": "age", "type": "numeric", "entity": "user", "default": -1.0},
            {"name": "recent", "type": "sequence", "entity": "user", "num_buckets": 10,
             "max_length": 3},
            {"name": "item_id", "type": "categorical", "entity": "item", "num_buckets": 10},
            {"name": "price", "type": "numeric", "entity": "item"},
            {"name": "device", "type": "categorical", "entity": "context",
             "vocabulary": ["ios", "web"]},
            {"name": "position", "type": "numeric", "entity": "context", "default": 1.0},
        ],
        "tasks": [{"name": "ctr", "label": "click"}],
    }
)  # fmt: skip


@pytest.fixture
def batcher() -> FeatureBatcher:
    return FeatureBatcher(SCHEMA)


def test_rank_batch_broadcasts_user_and_context_and_fills_defaults(batcher: FeatureBatcher) -> None:
    found = OnlineFeatures.from_rows(
        "u1",
        ["a", "b", "c"],
        {"age": 31.0, "recent": ["x", "", "y", "z", "w"]},
        [{"price": 2.5}, None, {}],
    )
    context, missing = batcher.context({"device": "web"})
    assert missing == ["position"]
    batch = batcher.rank_batch(found, context)
    assert batch["user_id"].tolist() == ["u1"] * 3
    assert batch["age"].dtype == np.float32 and batch["age"].tolist() == [31.0] * 3
    assert batch["recent"].shape == (3, 3)
    assert batch["recent"].tolist() == [[b"x", b"y", b"z"]] * 3  # "" dropped, first 3 kept
    assert batch["item_id"].tolist() == ["a", "b", "c"]
    assert batch["price"].tolist() == [2.5, 0.0, 0.0]
    assert batch["device"].tolist() == ["web"] * 3
    assert batch["position"].tolist() == [1.0] * 3
    # one row each, repeated by a zero stride, not copied per candidate
    assert all(batch[name].strides[0] == 0 for name in ("user_id", "age", "recent", "device"))


def test_unknown_user_gets_every_user_default(batcher: FeatureBatcher) -> None:
    found = OnlineFeatures.unavailable("u9", ["a"])
    batch = batcher.rank_batch(found, batcher.context(None)[0])
    assert batch["age"].tolist() == [-1.0]
    assert batch["recent"].tolist() == [[b"", b"", b""]]  # store values: UTF-8 bytes
    assert batch["user_id"].tolist() == ["u9"]


@pytest.mark.parametrize(
    ("context", "field", "words"),
    [
        ({"device": 1.5}, "device", "takes a string"),
        ({"device": True}, "device", "takes a string"),
        ({"position": "2"}, "position", "takes a number"),
        ({"position": float("inf")}, "position", "finite"),
        ({"age": 3.0}, "age", "user feature"),
        ({"colour": "red"}, "colour", "unknown context feature"),
    ],
)
def test_context_type_errors_name_the_field(
    batcher: FeatureBatcher, context: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        batcher.context(context)
    assert caught.value.loc == ("body", "context", field)
    assert words in str(caught.value)


def test_context_converts_integers_for_categoricals(batcher: FeatureBatcher) -> None:
    assert batcher.context({"device": 7, "position": 3})[0] == {"device": "7", "position": 3.0}


def test_instances_batch_types_each_value_and_defaults_the_rest(batcher: FeatureBatcher) -> None:
    batch = batcher.instances_batch(
        [{"user_id": 5, "price": 1, "recent": ["a", 7]}, {"item_id": "b", "price": None}]
    )
    assert batch["user_id"].tolist() == ["5", ""]
    assert batch["price"].tolist() == [1.0, 0.0]
    assert batch["recent"].tolist() == [["a", "7", ""], ["", "", ""]]
    assert batch["position"].tolist() == [1.0, 1.0]
    with pytest.raises(InvalidInput) as caught:
        batcher.instances_batch([{}, {"price": float("nan")}])
    assert caught.value.loc == ("body", "instances", 1, "price")


def test_pad_keeps_the_first_non_empty_elements() -> None:
    assert pad(["", "a", "b", "", "c", "d"], 3) == ["a", "b", "c"]
    assert pad([], 3) == []


def test_default_batch_has_the_requested_rows(batcher: FeatureBatcher) -> None:
    batch = batcher.default_batch(5)
    assert {name: value.shape[0] for name, value in batch.items()} == dict.fromkeys(
        SCHEMA.feature_names, 5
    )
    assert batch["device"].tolist() == ["", "ios", "", "ios", ""]
