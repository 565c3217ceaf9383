"""FeatureInputs: how each raw feature becomes part of the input vector, and bad feature dicts."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.errors import FeatureError
from ranker.keras_compat import keras, tf
from ranker.layers.attention import TargetAttention
from ranker.layers.inputs import FeatureInputs
from ranker.schema import Feature, Schema
from tests.ranker.conftest import click_log_schema


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


# ---- attention pooling (ranker/layers/attention.py) ---------------------------------------------

# [e, q, e*q, e-q] of a 2-d embedding: the e*q block (rows 4, 5) scores e . q
_DOT_KERNEL = np.array([[0.0]] * 4 + [[20.0]] * 2 + [[0.0]] * 2, dtype=np.float32)
_SEQUENCE = tf.constant([[[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]])  # the third position is padding
_VALID = tf.constant([[True, True, False]])
_QUERY = tf.constant([[0.0, 1.0]])  # matches the second element


def _dot_attention(weighting: str) -> TargetAttention:
    layer = TargetAttention(units=[], weighting=weighting)
    layer(_SEQUENCE, _QUERY, _VALID)
    layer.score.set_weights([_DOT_KERNEL, np.array([-10.0], dtype=np.float32)])
    return layer


@pytest.mark.parametrize(
    ("weighting", "expected"),
    # softmax: all weight on the match; sigmoid: ~1 on the match, ~0 elsewhere, over 2 positions
    [("softmax", [0.0, 1.0]), ("sigmoid", [0.0, 0.5])],
)
def test_attention_picks_the_element_that_matches_the_query(
    weighting: str, expected: list[float]
) -> None:
    out = _dot_attention(weighting)(_SEQUENCE, _QUERY, _VALID).numpy()
    np.testing.assert_allclose(out, [expected], atol=1e-4)


def test_bilinear_scorer_picks_the_matching_element() -> None:
    layer = TargetAttention(scorer="bilinear", weighting="softmax")
    layer(_SEQUENCE, _QUERY, _VALID)
    layer.kernel.assign(20.0 * np.eye(2, dtype=np.float32))
    np.testing.assert_allclose(layer(_SEQUENCE, _QUERY, _VALID).numpy(), [[0.0, 1.0]], atol=1e-4)


@pytest.mark.parametrize("weighting", ["softmax", "sigmoid"])
def test_attention_ignores_padding_positions(weighting: str) -> None:
    layer = TargetAttention(weighting=weighting)
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(4, 5, 3)).astype(np.float32)
    query = rng.normal(size=(4, 3)).astype(np.float32)
    valid = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    out = layer(sequence, query, valid).numpy()
    changed = np.where(valid[..., None], sequence, 100.0 * rng.normal(size=sequence.shape))
    np.testing.assert_allclose(layer(changed, query, valid).numpy(), out, rtol=1e-5)
    # the same rows without their padding positions, and an empty sequence pools to zeros
    np.testing.assert_allclose(layer(sequence[:1, :2], query[:1], valid[:1, :2]), out[:1], 1e-5)
    np.testing.assert_array_equal(out[3], 0.0)
    assert not np.allclose(out[0], out[1])


def test_attention_runs_in_the_compute_dtype_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = TargetAttention()
        out = layer(_SEQUENCE, _QUERY, _VALID)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == tf.bfloat16 and layer.score.kernel.dtype == tf.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scorer": "dot"}, "scorer must be one of ('mlp', 'bilinear'), got 'dot'"),
        ({"weighting": "none"}, "weighting must be one of ('sigmoid', 'softmax'), got 'none'"),
        ({"scorer": "bilinear", "units": [8]}, "units apply to the mlp scorer only, got [8]"),
        ({"units": [0]}, "MLP units must all be > 0, got [0]"),
    ],
)
def test_attention_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        TargetAttention(**kwargs)
    assert message in str(err.value)


def test_attention_config_round_trip() -> None:
    layer = TargetAttention(units=[8, 4], scorer="mlp", weighting="softmax", name="att")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, TargetAttention) and clone.get_config() == layer.get_config()


def _attention_schema() -> Schema:
    raw = click_log_schema().to_dict()
    raw["features"][4]["pooling"] = "attention"
    return Schema.from_dict(raw)


def test_attention_pooling_depends_on_the_candidate_item_and_keeps_the_width(data: tuple) -> None:
    schema = _attention_schema()
    layer = FeatureInputs(schema.features)
    batch = {k: v[:8] for k, v in data[0].items()}
    out = layer(batch)
    assert out.shape == (8, FeatureInputs(click_log_schema().features).output_dim)
    assert out.shape == (8, layer.output_dim) and set(layer.attention) == {"recent_items"}
    assert any("recent_items_attention" in w.name for w in layer.trainable_weights)
    # the same history under another candidate item pools differently (a mean would not)
    other = {**batch, "item_id": np.array(["i19"] * 8)}
    recent = slice(layer.output_dim - 4, layer.output_dim)
    assert not np.allclose(out.numpy()[:, recent], layer(other).numpy()[:, recent])
    # the padding ("", row 0 of the item table) changes nothing: the same rows without it
    assert (batch["recent_items"][:, 2:] == "").all()
    unpadded = {**batch, "recent_items": batch["recent_items"][:, :2]}
    np.testing.assert_allclose(layer(unpadded).numpy(), out.numpy(), rtol=1e-5)


def test_attention_schema_config_round_trip() -> None:
    layer = FeatureInputs(_attention_schema().features, name="inputs")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.features == layer.features and set(clone.attention) == {"recent_items"}


def test_attention_without_an_item_query_is_a_value_error_naming_the_sequence() -> None:
    user = Feature.model_validate(
        {"name": "user_id", "type": "categorical", "entity": "user", "num_buckets": 8}
    )
    recent = _feature(
        name="recent",
        type="sequence",
        max_length=3,
        shared_embedding="user_id",
        pooling="attention",
    )
    with pytest.raises(ValueError, match="'user_id' is not an item categorical feature, so it"):
        FeatureInputs([user, recent])


@pytest.mark.parametrize("attention", [False, True])
def test_call_on_encoded_features_equals_call_on_raw_ones(data: tuple, attention: bool) -> None:
    schema = _attention_schema() if attention else click_log_schema()
    layer = FeatureInputs(schema.features)
    batch = {k: v[:16] for k, v in data[0].items()}
    batch["price"] = np.where(np.arange(16) % 5 == 0, np.nan, batch["price"])  # NaNs filled alike
    raw = layer(batch).numpy()
    encoded = layer.encode(batch)
    # the categoricals' rows and the numeric block replace them; sequences stay raw
    categoricals = [f.name for f in schema.features if f.type == "categorical"]
    assert not {*categoricals, "price"} & set(encoded) and "recent_items" in encoded
    assert all(encoded[f"__encoded__{table}"].dtype == tf.int32 for table in layer.table_features)
    np.testing.assert_allclose(layer(encoded).numpy(), raw, rtol=1e-6)
    # a table's rows given, a raw categorical of another table still missing, is named
    partial = {k: v for k, v in encoded.items() if k != "__encoded__numeric"}
    with pytest.raises(FeatureError, match="missing feature 'price'"):
        layer(partial)
