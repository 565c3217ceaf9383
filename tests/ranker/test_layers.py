"""Building blocks: shapes, hand-computable values with constant weights, bad arguments, configs."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.keras_compat import keras, tf
from ranker.layers.cgc import CGC
from ranker.layers.cross_stitch import CrossStitch
from ranker.layers.experts import ExpertSet, Gate, mix
from ranker.layers.mlp import MLP
from ranker.layers.tower import ScoreProduct, Tower
from tests.ranker.conftest import assert_config_round_trips

ONES = keras.initializers.Constant(1.0)


def test_mlp_computes_relu_of_affine_layers() -> None:
    mlp = MLP([2, 1], kernel_initializer=ONES, bias_initializer=keras.initializers.Constant(-1.0))
    out = mlp(tf.constant([[1.0, 2.0], [0.0, 0.0]]))
    # layer 1: relu(1 + 2 - 1) = 2 on both units; layer 2: relu(2 + 2 - 1) = 3. Zeros: relu(-1) = 0 -> relu(-1) = 0
    np.testing.assert_allclose(out.numpy(), [[3.0], [0.0]])
    assert MLP([]).call(tf.ones([2, 3])).shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"units": [0]},
        {"units": [4], "activation": "nope"},
        {"units": [4], "dropout": 1.0},
        {"units": [4], "l2": -1},
    ],
)
def test_mlp_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="MLP"):
        MLP(**kwargs)


def test_experts_start_different_and_stack_to_batch_experts_dim() -> None:
    experts = ExpertSet(MLP([4]), num_experts=3)
    out = experts(tf.random.normal([5, 6], seed=1))
    assert out.shape == (5, 3, 4)
    kernels = [e.dense_layers[0].kernel.numpy() for e in experts.experts]
    assert not np.allclose(kernels[0], kernels[1])


def test_gate_weights_are_a_softmax_that_sums_to_one() -> None:
    gate = Gate(4)
    weights = gate(tf.random.normal([16, 8], seed=2)).numpy()
    assert weights.shape == (16, 4)
    assert (weights > 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    # with zero kernel and bias the gate is uniform
    uniform = Gate(4, kernel_initializer="zeros")(tf.ones([2, 3])).numpy()
    np.testing.assert_allclose(uniform, 0.25)


def test_mix_is_the_gate_weighted_sum_of_experts() -> None:
    experts = tf.constant([[[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]]])  # [1, 3, 2]
    weights = tf.constant([[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(mix(experts, weights).numpy(), [[1.5, 1.5]])


def test_cgc_routes_each_task_over_its_own_and_shared_experts_only() -> None:
    cgc = CGC(num_tasks=2, expert=MLP([3]), specific_experts=2, shared_experts=1, emit_shared=True)
    x = tf.random.normal([4, 5], seed=3)
    task0, task1, shared = tf.random.normal([4, 5], seed=4), tf.random.normal([4, 5], seed=5), x
    outputs, gates = cgc([task0, task1, shared])
    assert [g.shape[-1] for g in gates] == [3, 3, 5]  # own 2 + shared 1; the shared gate sees all 5
    # Changing task 1's input changes task 1's output but not task 0's (its experts are not routed to 0).
    moved, _ = cgc([task0, task1 + 10.0, shared])
    np.testing.assert_allclose(moved[0].numpy(), outputs[0].numpy())
    assert not np.allclose(moved[1].numpy(), outputs[1].numpy())
    # With constant gates the task output is exactly the mean of its own and the shared experts.
    for g in [*cgc.task_gates, cgc.shared_gate]:
        g.logits.kernel.assign(tf.zeros_like(g.logits.kernel))
    outputs, _ = cgc([task0, task1, shared])
    own = cgc.task_experts[0](task0)
    shared_out = cgc.shared(shared)
    expected = tf.reduce_mean(tf.concat([own, shared_out], axis=1), axis=1)
    np.testing.assert_allclose(outputs[0].numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_cgc_rejects_no_experts() -> None:
    with pytest.raises(ValueError, match="specific_experts=0, shared_experts=0"):
        CGC(num_tasks=2, expert=MLP([3]), specific_experts=0, shared_experts=0)


def test_cross_stitch_mixes_task_columns_with_alpha() -> None:
    stitch = CrossStitch(num_tasks=2, self_weight=0.75)
    a, b = tf.constant([[4.0, 0.0]]), tf.constant([[0.0, 8.0]])
    out_a, out_b = stitch([a, b])
    np.testing.assert_allclose(out_a.numpy(), [[3.0, 2.0]])  # 0.75 * a + 0.25 * b
    np.testing.assert_allclose(out_b.numpy(), [[1.0, 6.0]])
    with pytest.raises(ValueError, match="self_weight must be in"):
        CrossStitch(num_tasks=2, self_weight=1.5)


def test_tower_scores_binary_with_a_sigmoid_and_regression_linearly() -> None:
    x = tf.constant([[1.0, 1.0]])
    binary = Tower(task_type="binary", kernel_initializer=ONES)
    regression = Tower(task_type="regression", kernel_initializer=ONES)
    np.testing.assert_allclose(binary(x).numpy(), [1 / (1 + np.exp(-2.0))], rtol=1e-6)
    np.testing.assert_allclose(regression(x).numpy(), [2.0])
    with pytest.raises(ValueError, match="task_type must be one of"):
        Tower(task_type="multiclass")


def test_score_product_never_exceeds_a_factor() -> None:
    a, b = tf.constant([0.5, 0.9]), tf.constant([0.5, 0.1])
    out = ScoreProduct()([a, b]).numpy()
    np.testing.assert_allclose(out, [0.25, 0.09], rtol=1e-6)
    assert (out <= a.numpy()).all() and (out <= b.numpy()).all()


@pytest.mark.parametrize(
    "layer",
    [
        MLP([8, 4], activation="gelu", dropout=0.1, batch_norm=True, l2=1e-4),
        ExpertSet(MLP([4]), num_experts=3),
        Gate(3),
        CGC(num_tasks=2, expert=MLP([4]), specific_experts=1, shared_experts=2, emit_shared=True),
        CrossStitch(num_tasks=3, self_weight=0.8),
        Tower(hidden=MLP([4]), task_type="regression"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trips(layer: keras.layers.Layer) -> None:
    assert_config_round_trips(layer)
