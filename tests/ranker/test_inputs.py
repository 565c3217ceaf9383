"""FeatureInputs: how each raw feature becomes part of the input vector, and bad feature dicts."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.errors import FeatureError
from ranker.keras_compat import keras, tf
from ranker.layers.inputs import FeatureInputs
from ranker.schema import Feature, Schema


def _feature(**kwargs: object) -> Feature:
    return Feature.model_validate({"entity": "item", **kwargs})


def _constant_embeddings(layer: FeatureInputs) -> None:
    """Row r of every embedding table becomes [r, r, ...] so lookups can be read off the output."""
    for table in layer.embeddings.values():
        rows, dim = table.embeddings.shape
        table.embeddings.assign(np.repeat(np.arange(rows, dtype=np.float32)[:, None], dim, axis=1))


def test_output_is_the_concatenation_in_schema_order(schema: Schema, data: tuple) -> None:
    layer = FeatureInputs(schema.features)
    out = layer({k: v[:8] for k, v in data[0].items()})
    # user 4 + item 4 + device 2 + price 1 + recent_items (item table) 4
    assert out.shape == (8, 15) == (8, layer.output_dim)


def test_vocabulary_lookup_sends_unknown_and_missing_to_the_oov_row() -> None:
    layer = FeatureInputs(
        [_feature(name="device", type="categorical", vocabulary=["ios", "web"], embedding_dim=1)]
    )
    layer({"device": tf.constant(["ios"])})
    _constant_embeddings(layer)
    out = layer({"device": tf.constant(["ios", "web", "tv", ""])})
    np.testing.assert_array_equal(out.numpy()[:, 0], [1, 2, 0, 0])


def test_hashing_reserves_bucket_zero_for_missing_and_accepts_integers() -> None:
    layer = FeatureInputs(
        [_feature(name="hour", type="categorical", num_buckets=16, embedding_dim=1)]
    )
    layer({"hour": tf.constant(["1"])})
    _constant_embeddings(layer)
    out = layer({"hour": tf.constant(["", "7", "7", "8"])}).numpy()[:, 0]
    assert out[0] == 0 and out[1] == out[2] and 1 <= out[1] < 16 and 1 <= out[3] < 16
    as_ints = layer({"hour": tf.constant([7, 8], dtype=tf.int64)}).numpy()[:, 0]
    np.testing.assert_array_equal(as_ints, out[2:])


def test_sequences_mean_pool_over_non_padding_in_the_shared_table() -> None:
    item = _feature(name="item_id", type="categorical", vocabulary=["a", "b", "c"], embedding_dim=2)
    recent = _feature(name="recent", type="sequence", max_length=3, shared_embedding="item_id")
    layer = FeatureInputs([item, recent])
    layer({"item_id": tf.constant(["a"]), "recent": tf.constant([["a", "", ""]])})
    _constant_embeddings(layer)
    assert len(layer.embeddings) == 1  # the sequence owns no table
    out = layer(
        {
            "item_id": tf.constant(["a", "a", "a"]),
            # a,c -> rows 1,3 -> mean 2;  empty -> 0;  b,b,b,c truncated to b,b,b -> 2
            "recent": tf.constant([["a", "c", "", ""], ["", "", "", ""], ["b", "b", "b", "c"]]),
        }
    ).numpy()
    np.testing.assert_allclose(out[:, 2:], [[2.0, 2.0], [0.0, 0.0], [2.0, 2.0]])


def test_numerics_fill_nan_transform_and_normalize_with_adapted_statistics() -> None:
    price = _feature(name="price", type="numeric", transform="log1p", default=3.0)
    layer = FeatureInputs([price])
    raw = np.array([0.0, np.e - 1, np.e**2 - 1, np.e**3 - 1], dtype=np.float32)  # log1p: 0, 1, 2, 3
    layer.adapt([{"price": raw[:2]}, {"price": raw[2:]}])
    assert layer.means["price"].numpy() == pytest.approx(1.5)
    assert layer.variances["price"].numpy() == pytest.approx(1.25)
    out = layer({"price": tf.constant([np.e**2 - 1, np.nan, -5.0])}).numpy()[:, 0]
    scale = 1 / np.sqrt(1.25 + 1e-6)
    np.testing.assert_allclose(
        out, [0.5 * scale, (np.log1p(3.0) - 1.5) * scale, -1.5 * scale], rtol=1e-5
    )


def test_normalization_statistics_are_saved_with_the_layer() -> None:
    layer = FeatureInputs([_feature(name="x", type="numeric")])
    layer.adapt([{"x": np.array([1.0, 3.0], dtype=np.float32)}])
    names = sorted(v.name.split("/")[-1] for v in layer.weights)
    assert names == ["x_mean:0", "x_variance:0"]
    assert not layer.trainable_weights


def test_missing_feature_is_named(schema: Schema, data: tuple) -> None:
    layer = FeatureInputs(schema.features)
    features = {k: v[:4] for k, v in data[0].items() if k != "price"}
    with pytest.raises(FeatureError, match="missing feature 'price'"):
        layer(features)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "price",
            np.array(["cheap"] * 4),
            "feature 'price': expected numbers, got a string tensor",
        ),
        ("user_id", np.ones(4, dtype=np.float32), "feature 'user_id': expected strings"),
        ("recent_items", np.array(["i1"] * 4), "feature 'recent_items': a sequence needs a 2-D"),
    ],
)
def test_wrong_dtype_is_named(
    schema: Schema, data: tuple, name: str, value: np.ndarray, message: str
) -> None:
    layer = FeatureInputs(schema.features)
    features = {k: v[:4] for k, v in data[0].items()}
    features[name] = value
    with pytest.raises(FeatureError, match=message):
        layer(features)


def test_config_round_trip(schema: Schema) -> None:
    layer = FeatureInputs(schema.features, name="inputs")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.features == layer.features and clone.name == "inputs"
