"""AdaTT: the fusion unit's gated mix plus native residual by hand, gates over every task's experts,
task-to-task fusion, any number of tasks, training, configs and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.architectures.adatt import AdaTT
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.adatt import AdaTTLevel, FusionUnit
from ranker.layers.mlp import MLP
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import THREE_TASKS, assert_config_round_trips, first_tasks, make_data

HALF = keras.initializers.Constant(0.5)
# one batch row, 4 experts of width 2; the unit under test owns experts 2 and 3
EXPERTS = tf.constant([[[0.0, 0.0], [5.0, -3.0], [4.0, 4.0], [2.0, 6.0]]])
GATE_INPUT = tf.constant([[1.0, -2.0, 3.0]])


def _unit(**kwargs: object) -> FusionUnit:
    unit = FusionUnit(total_experts=4, native_start=2, native_experts=2, **kwargs)  # type: ignore[arg-type]
    unit((GATE_INPUT, EXPERTS))
    return unit


def _residual_weights(unit: FusionUnit) -> tf.Variable:
    assert unit.residual_weights is not None
    return unit.residual_weights


def test_fusion_unit_is_the_gated_mix_plus_the_native_combination() -> None:
    unit = _unit(residual_initializer=HALF, gate_kernel_initializer="zeros")
    fused, weights = unit((GATE_INPUT, EXPERTS))
    # a zero gate is uniform over all 4 experts: mean = [11, 7] / 4; native: 0.5 * ([4, 4] + [2, 6])
    np.testing.assert_allclose(weights.numpy(), [[0.25] * 4])
    np.testing.assert_allclose(fused.numpy(), [[2.75 + 3.0, 1.75 + 5.0]], rtol=1e-6)
    # the residual alone is the linear combination of the native experts only
    _residual_weights(unit).assign([1.0, -1.0])
    np.testing.assert_allclose(unit.residual(EXPERTS).numpy(), [[2.0, -2.0]])
    fused, _ = unit((GATE_INPUT, EXPERTS))
    np.testing.assert_allclose(fused.numpy(), [[2.75 + 2.0, 1.75 - 2.0]], rtol=1e-6)


def test_a_closed_gate_leaves_exactly_the_native_combination() -> None:
    unit = _unit(residual_initializer=HALF, gate_kernel_initializer="zeros")
    # all the gate's weight on expert 0, whose output is zero: the gated path contributes nothing
    unit.gate.logits.bias.assign([60.0, -60.0, -60.0, -60.0])
    fused, weights = unit((GATE_INPUT, EXPERTS))
    np.testing.assert_allclose(weights.numpy()[:, 0], 1.0)
    np.testing.assert_allclose(fused.numpy(), [[3.0, 5.0]])  # 0.5 * ([4, 4] + [2, 6]), exactly
    # counter-check: the same gate opened on expert 1 adds that expert (so the test can fail)
    unit.gate.logits.bias.assign([-60.0, 60.0, -60.0, -60.0])
    fused, _ = unit((GATE_INPUT, EXPERTS))
    np.testing.assert_allclose(fused.numpy(), [[8.0, 2.0]])


def test_a_single_native_expert_is_added_with_weight_one() -> None:
    unit = FusionUnit(total_experts=4, native_start=1, native_experts=1)
    unit((GATE_INPUT, EXPERTS))
    unit.gate.logits.bias.assign([60.0, -60.0, -60.0, -60.0])
    fused, _ = unit((GATE_INPUT, EXPERTS))
    np.testing.assert_allclose(fused.numpy(), [[5.0, -3.0]])
    assert unit.residual_weights is None
    assert len(unit.trainable_weights) == 2  # the gate's kernel and bias only


def test_residual_weights_start_uniform_within_the_papers_scale() -> None:
    unit = FusionUnit(total_experts=12, native_start=0, native_experts=4)
    unit((tf.ones([1, 3]), tf.ones([1, 12, 2])))
    values = _residual_weights(unit).numpy()
    assert (np.abs(values) <= 0.5).all() and len(set(values.tolist())) == 4  # sqrt(1 / 4)


def test_level_gates_cover_every_tasks_experts_and_sum_to_one() -> None:
    level = AdaTTLevel(3, MLP([3]), specific_experts=2, shared_experts=1, emit_shared=True)
    task_inputs = [tf.random.normal([8, 5], seed=s) for s in range(3)]
    shared = tf.random.normal([8, 5], seed=9)
    outputs, gates = level([*task_inputs, shared])
    assert len(outputs) == 4  # three tasks and the shared output
    for weights in gates:
        assert weights.shape == (8, 3 * 2 + 1)
        np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, atol=1e-6)
    # Task-to-task fusion: unlike CGC, task 1's input reaches task 0's output through the gate...
    moved, _ = level([task_inputs[0], task_inputs[1] + 10.0, task_inputs[2], shared])
    assert not np.allclose(moved[0].numpy(), outputs[0].numpy())
    # ...and every expert set gets gradient from task 0's output.
    with tf.GradientTape() as tape:
        task0 = level([*task_inputs, shared])[0][0]
    assert level.shared is not None
    sets = [*level.task_experts, level.shared]
    grads = tape.gradient(task0, [s.experts[0].dense_layers[0].kernel for s in sets])
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_level_output_is_the_uniform_mix_plus_each_tasks_own_experts() -> None:
    level = AdaTTLevel(2, MLP([3]), specific_experts=2, shared_experts=1)
    x = [tf.random.normal([4, 5], seed=s) for s in range(3)]
    level(x)
    for unit in level.task_units:
        unit.gate.logits.kernel.assign(tf.zeros_like(unit.gate.logits.kernel))
        _residual_weights(unit).assign([0.5, 0.25])
    outputs, _ = level(x)
    own = [experts(x[k]).numpy() for k, experts in enumerate(level.task_experts)]
    assert level.shared is not None
    everything = np.concatenate([*own, level.shared(x[2]).numpy()], axis=1)
    for k in range(2):
        expected = everything.mean(axis=1) + 0.5 * own[k][:, 0] + 0.25 * own[k][:, 1]
        np.testing.assert_allclose(outputs[k].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_backbone_names_gates_per_level_and_the_last_level_by_task(
    schema: Schema,
) -> None:
    features, _ = make_data(16, seed=1)
    model = RankingModel(schema, "adatt", {"levels": 3, "specific_experts": 2, "shared_experts": 1})
    gates = model.gate_weights(features)
    expected = {f"{t}{level}" for t in ("ctr", "cvr") for level in ("/level0", "/level1", "")}
    assert set(gates) == expected
    for weights in gates.values():
        assert weights.shape == (16, 2 * 2 + 1)
        np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("tasks", "hparams"),
    [
        (THREE_TASKS[:1], {"specific_experts": 1}),
        (THREE_TASKS[:2], {}),
        (THREE_TASKS, {"shared_experts": 2}),
    ],
    ids=["ctr", "ctr+cvr", "three-shared"],
)
def test_trains_on_one_two_and_three_tasks_binary_and_regression(
    tasks: list[dict], hparams: dict
) -> None:
    schema, features, labels = first_tasks(len(tasks), 512)
    keras.utils.set_random_seed(0)
    model = RankingModel(schema, "adatt", {"cross_layers": 0, **hparams})
    assert len(model.backbone.levels[0].task_units) == len(tasks)
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    history = model.fit(dataset, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    out = model(features)
    assert set(out) == set(schema.output_names)


@pytest.mark.parametrize(
    "layer",
    [
        FusionUnit(total_experts=6, native_start=2, native_experts=2, residual_initializer=HALF),
        AdaTTLevel(2, MLP([4]), specific_experts=2, shared_experts=2, emit_shared=True),
        AdaTT(3, MLP([4, 2], activation="gelu"), levels=2, specific_experts=3, shared_experts=1),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trips(layer: keras.layers.Layer) -> None:
    assert_config_round_trips(layer)


def test_a_backbone_rebuilt_from_its_config_computes_the_same_with_the_same_weights() -> None:
    x = tf.random.normal([4, 6], seed=5)
    original = AdaTT(2, MLP([4]), levels=2, specific_experts=2, shared_experts=1)
    clone = AdaTT.from_config(original.get_config())
    expected = original(x)
    clone(x)
    clone.set_weights(original.get_weights())
    for a, b in zip(expected, clone(x), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FusionUnit(4, native_start=0, native_experts=0), "native_experts must be >= 1"),
        (lambda: FusionUnit(4, native_start=3, native_experts=2), "native_start=3"),
        (lambda: AdaTTLevel(0, MLP([3])), "num_tasks must be >= 1, got 0"),
        (lambda: AdaTTLevel(2, MLP([3]), specific_experts=0), "specific_experts=0"),
        (lambda: AdaTTLevel(2, MLP([3]), shared_experts=-1), "shared_experts=-1"),
        (lambda: AdaTTLevel(2, MLP([3]), emit_shared=True), "emit_shared=True needs"),
        (lambda: AdaTT(2, MLP([3]), levels=0, specific_experts=1), "levels must be >= 1, got 0"),
    ],
)
def test_bad_arguments_raise(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_wrong_input_count_and_bad_hyperparameters_raise(schema: Schema) -> None:
    level = AdaTTLevel(2, MLP([3]), shared_experts=1)
    with pytest.raises(ValueError, match="expects 3 inputs, got 2"):
        level([tf.ones([1, 4])] * 2)
    with pytest.raises(ConfigError, match="specific_experts: Input should be greater"):
        RankingModel(schema, "adatt", {"specific_experts": 0})
    with pytest.raises(ConfigError, match="shared_expert: unknown key"):
        RankingModel(schema, "adatt", {"shared_expert": 1})
