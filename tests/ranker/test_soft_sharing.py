"""Soft parameter sharing: the penalty by hand (two and three tasks, zero with one), independent
columns without it, columns pulled together with it, training, configs and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.architectures.soft_sharing import SoftSharing
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import first_tasks, make_data

X = tf.constant([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]])  # input width 4


def _backbone(num_tasks: int, penalty: float) -> SoftSharing:
    backbone = SoftSharing(num_tasks, column=MLP([3, 2]), penalty=penalty)
    backbone(X)
    return backbone


def _set_constant(backbone: SoftSharing, kernels: list[float], biases: list[float]) -> None:
    """Column k: every kernel entry `kernels[k]`, every bias entry `biases[k]` (both layers)."""
    for column, kernel, bias in zip(backbone.columns.experts, kernels, biases, strict=True):
        for dense in column.dense_layers:
            dense.kernel.assign(tf.fill(dense.kernel.shape, kernel))
            dense.bias.assign(tf.fill(dense.bias.shape, bias))


def test_penalty_is_the_squared_distance_between_two_columns() -> None:
    backbone = _backbone(2, penalty=0.01)
    _set_constant(backbone, kernels=[1.0, 3.0], biases=[0.0, 0.5])
    # kernels: (4 * 3 + 3 * 2) entries, each (1 - 3)^2 = 4; biases: (3 + 2) entries, each 0.5^2
    distance = 18 * 4.0 + 5 * 0.25
    assert float(backbone.distance()) == pytest.approx(distance)
    (loss,) = backbone.losses
    assert float(loss) == pytest.approx(0.01 * distance)


def test_penalty_sums_over_every_pair_of_three_columns() -> None:
    backbone = _backbone(3, penalty=0.5)
    _set_constant(backbone, kernels=[1.0, 3.0, 4.0], biases=[0.0, 0.5, 0.0])
    # kernel pairs (1, 3), (1, 4), (3, 4): 4 + 9 + 1 per entry; bias pairs: 0.25 + 0 + 0.25
    distance = 18 * 14.0 + 5 * 0.5
    (loss,) = backbone.losses
    assert float(loss) == pytest.approx(0.5 * distance)
    # ...which is T times the squared distance to the columns' mean (the module docstring)
    weights = [
        np.concatenate([w.ravel() for w in c.get_weights()]) for c in backbone.columns.experts
    ]
    to_mean = sum(np.sum((w - np.mean(weights, axis=0)) ** 2) for w in weights)
    assert distance == pytest.approx(3 * to_mean)


def test_penalty_is_zero_with_one_task_and_with_equal_columns() -> None:
    single = _backbone(1, penalty=10.0)
    assert [float(loss) for loss in single.losses] == [0.0]
    equal = _backbone(2, penalty=10.0)
    _set_constant(equal, kernels=[2.0, 2.0], biases=[0.3, 0.3])
    assert float(equal.losses[0]) == 0.0


def test_the_model_adds_the_penalty_to_its_regularization_loss(schema: Schema) -> None:
    features, _ = make_data(16, seed=2)
    model = RankingModel(schema, "soft_sharing", {"penalty": 0.1, "embedding_l2": 0.0})
    model(features)
    columns = model.backbone.columns.experts
    a, b = (column.get_weights() for column in columns)
    by_hand = sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))
    assert by_hand > 0
    (loss,) = model.losses  # no embedding L2: the penalty is the only layer loss
    assert float(loss) == pytest.approx(0.1 * by_hand, rel=1e-5)


def test_without_penalty_a_tasks_loss_leaves_the_other_columns_alone() -> None:
    keras.utils.set_random_seed(1)
    free = SoftSharing(2, column=MLP([3, 2]), penalty=0.0)
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(tf.square(free(X)[0])) + tf.add_n(free.losses)
    own, other = (
        tape.gradient(loss, column.trainable_variables) for column in free.columns.experts
    )
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in own) > 0
    assert all(g is None or not np.any(tf.convert_to_tensor(g).numpy()) for g in other)
    # counter-check: with a penalty, task 0's loss pulls task 1's column toward task 0's
    tied = SoftSharing(2, column=MLP([3, 2]), penalty=0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tied(X)[0])) + tf.add_n(tied.losses)
    other = tape.gradient(loss, tied.columns.experts[1].trainable_variables)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in other) > 0


def _train_columns(penalty: float, steps: int = 40) -> tuple[float, float]:
    """Two tasks with different regression targets, Adam steps on the backbone alone: the
    columns' distance before and after."""
    keras.utils.set_random_seed(0)
    x = tf.random.normal([256, 6])
    targets = [tf.reduce_sum(x[:, :3], axis=1, keepdims=True), tf.sin(x[:, 3:4])]
    backbone = SoftSharing(2, column=MLP([8, 1], activation="tanh"), penalty=penalty)
    backbone(x)
    start = float(backbone.distance())
    optimizer = keras.optimizers.Adam(0.01)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            outputs = backbone(x)
            loss = tf.add_n(
                [tf.reduce_mean(tf.square(o - t)) for o, t in zip(outputs, targets, strict=True)]
                + backbone.losses
            )
        variables = backbone.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    return start, float(backbone.distance())


def test_a_penalty_pulls_the_columns_together_in_training() -> None:
    free, tied = _train_columns(0.0), _train_columns(1.0)
    assert free[0] == pytest.approx(tied[0])  # the same initial columns
    assert tied[1] < 0.2 * tied[0]
    assert free[1] > 0.8 * free[0]  # without the penalty they stay apart


@pytest.mark.parametrize("count", [1, 2, 3])
def test_trains_on_one_two_and_three_tasks(count: int) -> None:
    schema, features, labels = first_tasks(count, 512)
    keras.utils.set_random_seed(0)
    model = RankingModel(schema, "soft_sharing", {"cross_layers": 0, "penalty": 0.01})
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    history = model.fit(dataset, epochs=3, verbose=0)
    assert len(model.backbone.columns.experts) == count
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    if count > 1:
        assert all(value > 0 for value in history.history["regularization_loss"])


def test_get_config_round_trips() -> None:
    layer = SoftSharing(3, column=MLP([4, 2], activation="gelu", dropout=0.1), penalty=0.25)
    first = layer(X)
    config = layer.get_config()
    assert config["penalty"] == 0.25 and config["column"]["config"]["units"] == [4, 2]
    clone = SoftSharing.from_config(config)
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is SoftSharing
    clone(X)
    clone.set_weights(layer.get_weights())
    for a, b in zip(first, clone(X), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    assert float(clone.losses[0]) == pytest.approx(float(layer.losses[0]))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SoftSharing(2, MLP([3]), penalty=-0.1), "penalty must be >= 0, got -0.1"),
        (lambda: SoftSharing(2, MLP([3]), penalty=float("nan")), "penalty must be >= 0, got nan"),
        (lambda: SoftSharing(0, MLP([3])), "num_tasks must be >= 1, got 0"),
        (lambda: SoftSharing(2, MLP([])), "at least one layer"),
    ],
)
def test_bad_arguments_raise(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_config_errors_name_the_key(schema: Schema) -> None:
    with pytest.raises(ConfigError, match="architecture 'soft_sharing': penalties: unknown key"):
        RankingModel(schema, "soft_sharing", {"penalties": 0.1})
    with pytest.raises(ConfigError, match="penalty: Input should be greater than or equal to 0"):
        RankingModel(schema, "soft_sharing", {"penalty": -1.0})
    with pytest.raises(ConfigError, match="units: List should have at least 1 item"):
        RankingModel(schema, "soft_sharing", {"units": []})
