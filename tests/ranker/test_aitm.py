"""AITM: the AIT attention by hand, the transfer's direction, the calibrator, the served scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ranker.architectures.aitm import AITM
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP
from ranker.layers.transfer import AdaptiveInformationTransfer
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import click_log_schema, make_data

SMALL = {"task_units": [8, 4], "attention_units": 4, "tower_units": [4], "cross_layers": 0}


def _batch(data: tuple, n: int) -> tuple[dict, dict]:
    features, labels = data
    return {k: v[:n] for k, v in features.items()}, {k: v[:n] for k, v in labels.items()}


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def test_ait_pools_both_vectors_by_their_self_attention_scores() -> None:
    ait = AdaptiveInformationTransfer(2, kernel_initializer=keras.initializers.Constant(0.5))
    p, q = tf.constant([[1.0, 0.0], [0.0, 0.0]]), tf.constant([[1.0, 1.0], [2.0, 0.0]])
    z = ait([p, q]).numpy()
    # every projection maps u to 0.5 * sum(u) on both units: h(p) = [0.5, 0.5], h(q) = [1, 1] on
    # row 0; scores <h(u), h(u)> / sqrt(2): 0.5 / sqrt(2) for p, 2 / sqrt(2) for q
    w_p = 1.0 / (1.0 + math.exp((2.0 - 0.5) / math.sqrt(2.0)))
    row0 = w_p * 0.5 + (1.0 - w_p) * 1.0
    # row 1: p = 0 scores 0, q scores 2 / sqrt(2) and projects to [1, 1]
    w_p1 = 1.0 / (1.0 + math.exp(2.0 / math.sqrt(2.0)))
    np.testing.assert_allclose(z, [[row0, row0], [1.0 - w_p1, 1.0 - w_p1]], rtol=1e-6)
    np.testing.assert_allclose(ait.weights_of([p, q]).numpy()[:, 0], [w_p, w_p1], rtol=1e-6)


def test_a_closed_gate_transfers_nothing() -> None:
    ait = AdaptiveInformationTransfer(2)
    p, q = tf.constant([[10.0, -4.0]]), tf.constant([[0.5, 1.0]])
    ait([p, q])
    eye = np.eye(2, dtype=np.float32)
    # query I, key -I: a vector scores -|u|^2 / sqrt(2), so the large transferred p gets weight
    # ~exp(-80): z_t = h3(q_t) = q_t
    ait.set_weights([eye, -eye, eye])
    np.testing.assert_allclose(ait([p, q]).numpy(), q.numpy(), atol=1e-6)
    assert float(ait.weights_of([p, q])[0, 0]) < 1e-30
    # counter-check (so the test can fail): key +I opens it, and p takes over
    ait.set_weights([eye, eye, eye])
    np.testing.assert_allclose(ait([p, q]).numpy(), p.numpy(), atol=1e-5)


@pytest.mark.parametrize("units", [0, -3])
def test_ait_rejects_bad_units(units: int) -> None:
    with pytest.raises(ValueError, match=f"units must be >= 1, got {units}"):
        AdaptiveInformationTransfer(units)


def test_aitm_rejects_a_task_network_without_layers() -> None:
    with pytest.raises(ValueError, match="AITM task must be an MLP with at least one layer"):
        AITM(2, task=MLP([]))
    with pytest.raises(ValueError, match=r"calibrator_weight must be >= 0, got -1\.0"):
        AITM(2, task=MLP([4]), calibrator_weight=-1.0)


def test_representations_chain_the_tasks_in_schema_order() -> None:
    x = tf.random.normal([5, 6], seed=4)
    one = AITM(1, task=MLP([4]))
    (z0,) = one(x)
    np.testing.assert_allclose(z0.numpy(), one.bottoms[0](x).numpy())
    assert not one.transfers and not one.attentions
    three = AITM(3, task=MLP([8, 4]), attention_units=3)
    z = three(x)
    assert [r.shape for r in z] == [(5, 4), (5, 3), (5, 3)]
    q = [bottom(x) for bottom in three.bottoms]
    np.testing.assert_allclose(z[0].numpy(), q[0].numpy())
    for t in (1, 2):
        expected = three.attentions[t - 1]([three.transfers[t - 1](z[t - 1]), q[t]])
        np.testing.assert_allclose(z[t].numpy(), expected.numpy(), rtol=1e-6)


def test_the_transfer_runs_from_click_to_conversion_only(schema: Schema, data: tuple) -> None:
    features, labels = _batch(data, 128)
    keras.utils.set_random_seed(0)  # a draw whose ReLUs all die on the batch passes no gradient
    model = RankingModel(schema, "aitm", SMALL)
    model(features)
    bottoms = model.backbone.bottoms
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(features, training=True)
        ctr_loss = keras.losses.binary_crossentropy(labels["click"], outputs["ctr"])
        ctcvr_loss = keras.losses.binary_crossentropy(labels["conversion"], outputs["ctcvr"])
    from_ctcvr = tape.gradient(ctcvr_loss, bottoms[0].trainable_variables)
    from_ctr = tape.gradient(ctr_loss, bottoms[1].trainable_variables)
    assert all(g is not None for g in from_ctcvr)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in from_ctcvr) > 0
    assert all(g is None for g in from_ctr)


def test_calibrator_is_the_weighted_mean_excess_of_ctcvr_over_ctr(schema: Schema) -> None:
    backbone = AITM(2, task=MLP([4]), calibrator_weight=0.6)
    scores = {
        "ctr": tf.constant([0.5, 0.2, 0.1, 0.9]),
        "cvr": tf.constant([0.6, 1.0, 1.0, 1.0]),
        "ctcvr": tf.constant([0.3, 0.4, 0.1, 0.95]),
    }
    terms = backbone.output_losses(schema, scores, {}, [], training=True)
    # excess max(ctcvr - ctr, 0) = [0, 0.2, 0, 0.05]: mean 0.0625, times 0.6
    assert set(terms) == {"ctcvr_calibrator"}
    assert float(terms["ctcvr_calibrator"]) == pytest.approx(0.6 * 0.0625, rel=1e-6)
    off = AITM(2, task=MLP([4]), calibrator_weight=0.0)
    assert off.output_losses(schema, scores, {}, [], training=True) == {}


def test_the_model_adds_the_calibrator_to_its_loss(schema: Schema, data: tuple) -> None:
    batch = _batch(data, 64)
    with_it = RankingModel(schema, "aitm", {**SMALL, "calibrator_weight": 0.6})
    without = RankingModel(schema, "aitm", {**SMALL, "calibrator_weight": 0.0})
    with_it(batch[0]), without(batch[0])
    with_it.towers[1].out.bias.assign([4.0])  # ctcvr above ctr on every row
    with_it.towers[0].out.bias.assign([-4.0])
    without.set_weights(with_it.get_weights())
    out = with_it(batch[0])
    excess = float(tf.reduce_mean(tf.nn.relu(out["ctcvr"] - out["ctr"])))
    assert excess > 0.1
    difference = float(with_it.compute_loss(batch)) - float(without.compute_loss(batch))
    assert difference == pytest.approx(0.6 * excess, rel=1e-4)


def test_served_cvr_is_a_clipped_ratio_and_ctcvr_the_conversion_tower(
    schema: Schema, data: tuple
) -> None:
    features, _ = _batch(data, 256)
    model = RankingModel(schema, "aitm", SMALL)
    first = model(features)
    # spread ctcvr's logits wide and centre them on ctr's: ctcvr above ctr on about half the
    # rows (cvr clipped there), below on the others
    conversion_out = model.towers[1].out
    conversion_out.kernel.assign(conversion_out.kernel * 20.0)
    spread = model(features)["ctcvr"].numpy()
    conversion_out.bias.assign(
        [np.median(_logit(first["ctr"].numpy())) - np.median(_logit(spread))]
    )
    out = {k: v.numpy() for k, v in model(features).items()}
    representations = model.backbone(model.feature_inputs[0](features))
    conversion_tower = model.towers[1](representations[1]).numpy()
    np.testing.assert_allclose(out["ctcvr"], conversion_tower, rtol=1e-6)
    assert (out["ctcvr"] > out["ctr"]).any() and (out["ctcvr"] < out["ctr"]).any()
    assert ((out["cvr"] >= 0.0) & (out["cvr"] <= 1.0)).all()
    np.testing.assert_allclose(out["cvr"], np.minimum(out["ctcvr"] / out["ctr"], 1.0), rtol=1e-5)
    assert [(o.output, o.labels, o.mask) for o in model.objectives] == [
        ("ctr", ("click",), None),
        ("ctcvr", ("click", "conversion"), None),
    ]


def test_aitm_trains_and_reloads_from_its_config(schema: Schema) -> None:
    features, labels = make_data(1024, seed=5)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    keras.utils.set_random_seed(3)
    model = RankingModel(schema, "aitm", SMALL)
    model.adapt([features])
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    model.fit(dataset, epochs=3, verbose=0)
    after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert after < before - 0.05
    # the backbone rebuilt from its config, with the trained weights, computes the same
    x = model.feature_inputs[0](features)
    rebuilt = keras.layers.deserialize(keras.layers.serialize(model.backbone))
    assert isinstance(rebuilt, AITM)
    rebuilt(x)
    rebuilt.set_weights(model.backbone.get_weights())
    for got, expected in zip(rebuilt(x), model.backbone(x), strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert RankingModel.from_config(model.get_config()).hparams == model.hparams


@pytest.mark.parametrize(
    "layer",
    [
        AITM(
            3,
            task=MLP([8, 4], activation="gelu", dropout=0.1),
            attention_units=5,
            calibrator_weight=0.3,
        ),
        AdaptiveInformationTransfer(5, kernel_initializer="zeros"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trips(layer: keras.layers.Layer) -> None:
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    assert type(keras.layers.deserialize(keras.layers.serialize(layer))) is type(layer)


def test_a_product_without_its_condition_pair_is_a_config_error() -> None:
    schema = click_log_schema(
        tasks=[
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "condition": "click"},
            {"name": "like", "label": "like"},
        ],
        products=[
            {"name": "ctcvr", "of": ["ctr", "cvr"]},
            {"name": "ctlike", "of": ["ctr", "like"]},
        ],
    )
    with pytest.raises(ConfigError, match="'ctlike' must pair a task with the task it is cond"):
        RankingModel(schema, "aitm")
