"""NDDR: the layer's fused output by hand (two and three tasks, batch norm before the activation),
the identity initialisation as the separate columns, cross-task gradients, training, configs and
bad arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ranker.architectures.nddr import NDDRNetwork
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.nddr import NDDR
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import assert_config_round_trips, first_tasks

X = tf.constant([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]])  # input width 2


def test_two_tasks_mix_with_the_papers_initial_weights() -> None:
    layer = NDDR(2, batch_norm=False)  # self 0.9, others 0.1
    a, b = tf.constant([[1.0, -2.0]]), tf.constant([[3.0, 4.0]])
    out_a, out_b = layer([a, b])
    # relu(0.9 * a + 0.1 * b) = relu([1.2, -1.4]); relu(0.1 * a + 0.9 * b) = relu([2.8, 3.4])
    np.testing.assert_allclose(out_a.numpy(), [[1.2, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(out_b.numpy(), [[2.8, 3.4]], rtol=1e-6)
    # the bias (zeros at first) is added before the activation
    assert layer.bias is not None
    layer.bias.assign([0.0, 2.0, -3.0, 0.0])
    out_a, out_b = layer([a, b])
    np.testing.assert_allclose(out_a.numpy(), [[1.2, 0.6]], rtol=1e-6)
    np.testing.assert_allclose(out_b.numpy(), [[0.0, 3.4]], rtol=1e-6)


def test_three_tasks_spread_the_others_weight_evenly() -> None:
    layer = NDDR(3, self_weight=0.8, others_weight=0.2, batch_norm=False, activation="linear")
    inputs = [tf.constant([[1.0, 2.0]]), tf.constant([[3.0, 4.0]]), tf.constant([[5.0, 6.0]])]
    outputs = [o.numpy() for o in layer(inputs)]
    # each other task weighs 0.2 / 2: out_a = 0.8 a + 0.1 b + 0.1 c, and so on
    np.testing.assert_allclose(outputs[0], [[1.6, 2.6]], rtol=1e-6)
    np.testing.assert_allclose(outputs[1], [[3.0, 4.0]], rtol=1e-6)
    np.testing.assert_allclose(outputs[2], [[4.4, 5.4]], rtol=1e-6)
    np.testing.assert_allclose(layer.mixing(), [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert layer.kernel.shape == (6, 6)
    np.testing.assert_allclose(NDDR(1).mixing(), [[1.0]])  # one task: all on itself


def test_batch_norm_comes_before_the_activation() -> None:
    layer = NDDR(2, self_weight=1.0, others_weight=0.0)
    a = tf.constant([[1.0, 5.0], [3.0, 1.0]])
    zeros = tf.zeros([2, 2])
    out_a, out_b = layer([a, zeros], training=True)
    # a's features over the batch: (1, 3) -> (-1, 1) / sqrt(1 + eps), (5, 1) -> (2, -2) / sqrt(4 + eps)
    eps = 1e-3
    expected = [[0.0, 2 / np.sqrt(4 + eps)], [1 / np.sqrt(1 + eps), 0.0]]
    np.testing.assert_allclose(out_a.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(out_b.numpy(), 0.0)
    # at inference the fresh statistics (mean 0, variance 1) leave relu(x / sqrt(1 + eps))
    out_a, _ = NDDR(2, self_weight=1.0, others_weight=0.0)([a, zeros], training=False)
    np.testing.assert_allclose(out_a.numpy(), a.numpy() / np.sqrt(1 + eps), rtol=1e-5)


def _columns_alone(network: NDDRNetwork, x: tf.Tensor) -> list[np.ndarray]:
    """Each task's column layers applied one after the other, skipping the NDDR layers."""
    outputs = []
    for column in network.columns:
        h = x
        for layer in column:
            h = layer(h)
        outputs.append(h.numpy())
    return outputs


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_identity_initialisation_is_the_separate_task_networks(num_tasks: int) -> None:
    keras.utils.set_random_seed(2)
    network = NDDRNetwork(num_tasks, [4, 3], self_weight=1.0, others_weight=0.0, batch_norm=False)
    got = [r.numpy() for r in network(X)]
    for g, expected in zip(got, _columns_alone(network, X), strict=True):
        np.testing.assert_array_equal(g, expected)
    # counter-check: the paper's initial weights mix the tasks (so the test can fail)
    keras.utils.set_random_seed(2)
    mixed = NDDRNetwork(num_tasks, [4, 3], batch_norm=False)
    mixed_out = mixed(X)
    assert not np.allclose(mixed_out[0].numpy(), _columns_alone(mixed, X)[0])


def test_network_output_by_hand_with_constant_columns() -> None:
    network = NDDRNetwork(2, [2], batch_norm=False)
    x = tf.constant([[1.0, 2.0]])
    network(x)
    for column, value in zip(network.columns, [1.0, 0.5], strict=True):
        dense = column[0].dense_layers[0]
        dense.kernel.assign(tf.fill(dense.kernel.shape, value))
    # columns: relu(1 + 2) = 3 and relu(0.5 + 1) = 1.5 per unit; then 0.9 / 0.1 mixes
    task_0, task_1 = network(x)
    np.testing.assert_allclose(task_0.numpy(), [[2.85, 2.85]], rtol=1e-6)
    np.testing.assert_allclose(task_1.numpy(), [[1.65, 1.65]], rtol=1e-6)


def test_a_tasks_output_reaches_the_other_columns_only_through_the_others_weight() -> None:
    for others_weight, reaches in [(0.1, True), (0.0, False)]:
        network = NDDRNetwork(2, [4, 3], others_weight=others_weight, batch_norm=False)
        with tf.GradientTape() as tape:
            task_0 = tf.reduce_sum(network(X)[0])
        grads = tape.gradient(task_0, network.columns[1][0].trainable_variables)
        size = sum(0.0 if g is None else float(tf.reduce_sum(tf.abs(g))) for g in grads)
        assert (size > 0) is reaches, (others_weight, size)


@pytest.mark.parametrize(
    ("count", "hparams"),
    [(1, {}), (2, {}), (3, {"batch_norm": False, "others_weight": 0.3})],
    ids=["ctr", "ctr+cvr", "three-no-bn"],
)
def test_trains_on_one_two_and_three_tasks(count: int, hparams: dict) -> None:
    schema, features, labels = first_tasks(count, 512)
    keras.utils.set_random_seed(0)
    model = RankingModel(schema, "nddr", {"cross_layers": 0, **hparams})
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    history = model.fit(dataset, epochs=3, verbose=0)
    assert [f.num_tasks for f in model.backbone.fusions] == [count, count]
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert set(model(features)) == set(schema.output_names)


def test_get_config_round_trips() -> None:
    layers: list[Any] = [
        NDDR(3, self_weight=0.7, others_weight=0.2, batch_norm=False, activation="tanh"),
        NDDRNetwork(2, [4, 2], activation="gelu", dropout=0.1, self_weight=0.8, batch_norm=True),
    ]
    for layer in layers:
        clone = assert_config_round_trips(layer)
    # the rebuilt network with the same weights computes the same representations
    first = layer(X)
    clone(X)
    clone.set_weights(layer.get_weights())
    for a, b in zip(first, clone(X), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: NDDR(0), "num_tasks must be >= 1, got 0"),
        (lambda: NDDR(2, self_weight=-0.5), "self_weight must be >= 0, got -0.5"),
        (lambda: NDDR(2, others_weight=float("nan")), "others_weight must be >= 0, got nan"),
        (
            lambda: NDDR(2, activation="bogus"),
            "activation must name a Keras activation, got 'bogus'",
        ),
        (lambda: NDDRNetwork(2, []), r"units must have at least one layer, got \[\]"),
        (lambda: NDDRNetwork(2, [4, 0]), r"MLP units must all be > 0, got \[0\]"),
    ],
)
def test_bad_arguments_raise(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_wrong_inputs_and_bad_hyperparameters_raise(schema: Schema) -> None:
    with pytest.raises(ValueError, match="expects 3 inputs, got 2"):
        NDDR(3)([tf.ones([1, 2])] * 2)
    with pytest.raises(ValueError, match=r"one width, got \[2, 3\]"):
        NDDR(2)([tf.ones([1, 2]), tf.ones([1, 3])])
    with pytest.raises(ConfigError, match="architecture 'nddr': batchnorm: unknown key"):
        RankingModel(schema, "nddr", {"batchnorm": False})
    with pytest.raises(
        ConfigError, match="self_weight: Input should be greater than or equal to 0"
    ):
        RankingModel(schema, "nddr", {"self_weight": -1.0})
    with pytest.raises(ConfigError, match="batch_norm: Input should be a valid boolean"):
        RankingModel(schema, "nddr", {"batch_norm": "sometimes"})
