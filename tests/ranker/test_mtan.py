"""MTAN: the attention mask by hand, masks forced open or shut, the carried features' wiring, any
number of tasks, training, configs and bad arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ranker.architectures.mtan import MTAN
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.mtan import TaskAttention
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import assert_config_round_trips, first_tasks

HALF = keras.initializers.Constant(0.5)
MINUS_ONE = keras.initializers.Constant(-1.0)
OPEN = 60.0  # sigmoid(60) is 1 in float32: a mask forced open


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z))


def test_attention_mask_with_constant_weights_is_computed_by_hand() -> None:
    attention = TaskAttention(hidden_units=2, kernel_initializer=HALF, bias_initializer=MINUS_ONE)
    shared = tf.constant([[1.0, 2.0], [1.0, -3.0]])
    carried = tf.constant([[1.0, 0.0], [0.0, 0.0]])
    attended = attention((shared, carried))
    # row 1: [1, 2, 1, 0] sums to 4; hidden relu(0.5 * 4 - 1) = 1 on both units; mask logit
    # 0.5 * (1 + 1) - 1 = 0, mask 0.5. Row 2: sum -2, hidden relu(-2) = 0, logit -1.
    mask = attention.mask((shared, carried)).numpy()
    np.testing.assert_allclose(mask, [[0.5, 0.5], [_sigmoid(-1.0)] * 2], rtol=1e-6)
    np.testing.assert_allclose(
        attended.numpy(), [[0.5, 1.0], [_sigmoid(-1.0), -3.0 * _sigmoid(-1.0)]], rtol=1e-6
    )
    assert attention.hidden.kernel.shape == (4, 2) and attention.gate.kernel.shape == (2, 2)


def test_first_layers_attention_reads_the_shared_feature_alone() -> None:
    attention = TaskAttention(kernel_initializer=HALF, bias_initializer=MINUS_ONE)
    attended = attention(tf.constant([[1.0, 2.0]]))
    # hidden width defaults to the shared width (2): relu(0.5 * 3 - 1) = 0.5; logit 0.5 - 1
    assert attention.hidden.kernel.shape == (2, 2)
    np.testing.assert_allclose(attended.numpy(), [[_sigmoid(-0.5), 2 * _sigmoid(-0.5)]], rtol=1e-6)


def _force(attention: TaskAttention, logit: float) -> None:
    attention.gate.kernel.assign(tf.zeros_like(attention.gate.kernel))
    attention.gate.bias.assign(tf.fill(attention.gate.bias.shape, logit))


def test_open_masks_give_every_task_the_shared_networks_features() -> None:
    mtan = MTAN(3, units=[5, 4])
    x = tf.random.normal([6, 7], seed=1)
    mtan(x)
    for task in mtan.attention:
        for attention in task:
            _force(attention, OPEN)
    shared = mtan.shared[1](mtan.shared[0](x))
    for representation in mtan(x):
        np.testing.assert_allclose(representation.numpy(), shared.numpy(), rtol=1e-6)
    # counter-check: a mask shut at the last layer zeroes that task's feature only
    _force(mtan.attention[1][1], -OPEN)
    out = mtan(x)
    np.testing.assert_allclose(out[1].numpy(), 0.0, atol=1e-20)
    np.testing.assert_allclose(out[0].numpy(), shared.numpy(), rtol=1e-6)


def test_each_task_carries_its_own_attended_feature_through_the_shared_carrier() -> None:
    mtan = MTAN(2, units=[5, 4])
    x = tf.random.normal([6, 7], seed=2)
    mtan(x)
    # layer 0: task 0's mask open (its feature is the shared one), task 1's shut (zero)
    _force(mtan.attention[0][0], OPEN)
    _force(mtan.attention[1][0], -OPEN)
    # layer 1: both tasks' modules with the same (random) weights
    mtan.attention[1][1].set_weights(mtan.attention[0][1].get_weights())
    first = mtan.shared[0](x)
    second = mtan.shared[1](first)
    carrier = mtan.carriers[0]
    out = mtan(x)
    # task 0's layer-1 module reads [p_1; f(p_0)]: the shared feature through the carrier Dense
    expected_0 = mtan.attention[0][1]((second, carrier(first)))
    expected_1 = mtan.attention[1][1]((second, carrier(tf.zeros_like(first))))
    np.testing.assert_allclose(out[0].numpy(), expected_0.numpy(), rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), expected_1.numpy(), rtol=1e-6)
    assert not np.allclose(out[0].numpy(), out[1].numpy())  # what each task carried matters


@pytest.mark.parametrize("tasks", [1, 2, 3])
def test_trains_on_one_two_and_three_tasks(tasks: int) -> None:
    schema, features, labels = first_tasks(tasks, 1024)
    keras.utils.set_random_seed(0)
    model = RankingModel(schema, "mtan", {"cross_layers": 0, "units": [16, 8]})
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    losses = model.fit(dataset, epochs=4, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert len(model.backbone.attention) == tasks
    assert all(v.shape == (1024,) for v in model(features).values())


def test_get_config_round_trips() -> None:
    x = tf.random.normal([4, 6], seed=5)
    attention = TaskAttention(hidden_units=3, kernel_initializer=HALF)
    mtan = MTAN(3, units=[5, 4, 2], attention_units=3, activation="gelu", dropout=0.1)
    layers: list[Any] = [attention, mtan]
    for layer in layers:
        clone = assert_config_round_trips(layer)
    first = mtan(x)
    clone(x)
    clone.set_weights(mtan.get_weights())
    for a, b in zip(first, clone(x), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TaskAttention(hidden_units=0), "hidden_units must be >= 1 or None, got 0"),
        (lambda: MTAN(2, units=[]), r"units must be a non-empty list .*got \[\]"),
        (lambda: MTAN(2, units=[4, 0]), r"got \[4, 0\]"),
        (lambda: MTAN(0, units=[4]), "num_tasks must be >= 1, got 0"),
    ],
)
def test_bad_arguments_raise(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_wrong_inputs_and_bad_hyperparameters_raise(schema: Schema) -> None:
    attention = TaskAttention()
    with pytest.raises(ValueError, match="expects shared or"):
        attention([tf.ones([1, 2])] * 3)
    with pytest.raises(ConfigError, match="attention_units: Input should be greater"):
        RankingModel(schema, "mtan", {"attention_units": 0})
    with pytest.raises(ConfigError, match="attention_unit: unknown key"):
        RankingModel(schema, "mtan", {"attention_unit": 8})
