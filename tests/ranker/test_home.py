"""HoME (ranker/architectures/home.py, ranker/layers/home.py): the feature-gate, the self-gate, the
hierarchy mask, expert normalization, the switches, training with 1-3 tasks, configs, errors."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.architectures.home import HoME
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.home import FeatureGate, FeatureGatedExperts, HierarchyLevel, SelfGate
from ranker.layers.mlp import MLP
from ranker.model import RankingModel
from tests.ranker.conftest import THREE_TASKS, click_log_schema, make_data

ONES = keras.initializers.Constant(1.0)


def _backbone(num_tasks: int = 2, **config: object) -> HoME:
    return HoME.from_hparams(HoME.parse_config({"expert_units": [4], **config}), num_tasks)


def _swish(z: np.ndarray) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


def test_feature_gate_is_the_identity_with_a_zero_up_projection_and_2_sigmoid_otherwise() -> None:
    x = tf.constant([[1.0, 2.0], [-1.0, 0.0]])
    np.testing.assert_array_equal(FeatureGate(3)(x).numpy(), x.numpy())  # 2 * sigmoid(0) = 1
    gate = FeatureGate(1, down_initializer=ONES, up_initializer=keras.initializers.Constant(0.5))
    # x A = [3, -1]; (x A) B = [1.5, 1.5] and [-0.5, -0.5]; 2 sigmoid(1.5) = 1.635149,
    # 2 sigmoid(-0.5) = 0.755081
    np.testing.assert_allclose(gate(x).numpy(), [[1.635149, 3.270298], [-0.755081, 0.0]], rtol=1e-5)
    with pytest.raises(ValueError, match="FeatureGate rank must be >= 1, got 0"):
        FeatureGate(0)


def test_each_expert_reads_its_own_feature_gated_input() -> None:
    experts = FeatureGatedExperts(MLP([3]), num_experts=2, feature_gate_rank=2)
    x = tf.random.normal([6, 5], seed=3)
    before = experts(x).numpy()
    plain = [expert(x).numpy() for expert in experts.experts.experts]
    np.testing.assert_allclose(before, np.stack(plain, axis=1), rtol=1e-6)  # gates start at 1
    up = experts.feature_gates[0].up
    assert up is not None
    up.kernel.assign(tf.ones([2, 5]))
    after = experts(x).numpy()
    assert not np.allclose(after[:, 0], before[:, 0])
    np.testing.assert_array_equal(after[:, 1], before[:, 1])  # expert 1 has a gate of its own
    assert FeatureGatedExperts(MLP([3]), 2).feature_gates == []
    with pytest.raises(ValueError, match="feature_gate_rank must be >= 1 or None, got 0"):
        FeatureGatedExperts(MLP([3]), 2, feature_gate_rank=0)


def test_self_gate_is_a_sigmoid_for_one_expert_and_a_softmax_for_several() -> None:
    x = tf.random.normal([4, 3], seed=4)
    one = SelfGate(1)(x).numpy()
    assert one.shape == (4, 1) and ((one > 0) & (one < 1)).all()
    several = SelfGate(3)(x).numpy()
    np.testing.assert_allclose(several.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="SelfGate num_experts must be >= 1, got 0"):
        SelfGate(0)


def test_hierarchy_level_masks_gates_and_adds_the_self_gated_own_experts_by_hand() -> None:
    level = HierarchyLevel(
        MLP([2], activation="linear"),
        block_experts=[1, 1, 1],
        gate_blocks=[[0, 1], [0, 2]],
        own_blocks=[1, None],
    )
    blocks = [tf.random.normal([5, 3], seed=s) for s in (1, 2, 3)]
    gates_in = [tf.random.normal([5, 4], seed=s) for s in (5, 6)]
    level(blocks, gates_in)
    for logits in [gate.logits for gate in level.gates] + [
        gate.logits for gate in level.self_gates.values()
    ]:
        logits.kernel.assign(tf.zeros_like(logits.kernel))
    (out0, out1), (w0, w1) = level(blocks, gates_in)
    e = [block(x)[:, 0].numpy() for block, x in zip(level.blocks, blocks, strict=True)]
    # gate 0: uniform over blocks 0 and 1, plus sigmoid(0) = 0.5 of its own block 1
    np.testing.assert_allclose(w0.numpy(), [[0.5, 0.5, 0.0]] * 5)
    np.testing.assert_allclose(out0.numpy(), 0.5 * e[0] + 0.5 * e[1] + 0.5 * e[1], rtol=1e-6)
    np.testing.assert_allclose(w1.numpy(), [[0.5, 0.0, 0.5]] * 5)
    np.testing.assert_allclose(out1.numpy(), 0.5 * e[0] + 0.5 * e[2], rtol=1e-6)
    # block 2 is masked out of gate 0: a new input there moves gate 1's output, not gate 0's
    moved = level([blocks[0], blocks[1], blocks[2] + 10.0], gates_in)[0]
    np.testing.assert_array_equal(moved[0].numpy(), out0.numpy())
    assert not np.allclose(moved[1].numpy(), out1.numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_experts": [], "gate_blocks": [[0]]}, "block_experts must be a non-empty"),
        ({"block_experts": [1, 0], "gate_blocks": [[0]]}, r"counts >= 1, got \[1, 0\]"),
        ({"block_experts": [1], "gate_blocks": []}, "at least one gate"),
        ({"block_experts": [1], "gate_blocks": [[1]]}, r"gate_blocks\[0\] .* got \[1\]"),
        ({"block_experts": [1], "gate_blocks": [[0, 0]]}, r"gate_blocks\[0\] .* got \[0, 0\]"),
        (
            {"block_experts": [1, 1], "gate_blocks": [[0]], "own_blocks": [1]},
            r"own_blocks\[0\] must be a block gate 0 sees \(\[0\]\) or None, got 1",
        ),
        (
            {"block_experts": [1], "gate_blocks": [[0]], "own_blocks": [0, 0]},
            "one entry per gate",
        ),
    ],
)
def test_hierarchy_level_rejects_bad_masks(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HierarchyLevel(MLP([2]), **kwargs)


def test_a_tasks_gates_give_the_other_groups_experts_exactly_zero_weight() -> None:
    backbone = _backbone(task_groups=[[0], [1]])  # 2 shared, 1 per group, 1 per task
    x = tf.random.normal([32, 6], seed=7)
    reps, gates = backbone(x, training=False, gates=True)
    # meta level: [shared, shared, group 0, group 1]; task level: + [task 0, task 1]
    others = {
        "task0/level0": [3],
        "task1/level0": [2],
        "task0": [3, 5],
        "task1": [2, 4],
    }
    for key, masked in others.items():
        weights = gates[key].numpy()
        np.testing.assert_array_equal(weights[:, masked], 0.0)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
        assert (np.delete(weights, masked, axis=1) > 0).all()  # the mask is all that zeroes them
    # the task level's group-1 and task-1 experts reach task 1, never task 0
    for block in backbone.tasks.blocks[2], backbone.tasks.blocks[4]:  # group 1's, task 1's
        block.set_weights([w * 3.0 + 1.0 for w in block.get_weights()])
    moved = backbone(x, training=False)
    np.testing.assert_array_equal(moved[0].numpy(), reps[0].numpy())
    assert not np.allclose(moved[1].numpy(), reps[1].numpy())


@pytest.mark.parametrize("normalized", [True, False])
def test_expert_normalization_standardizes_each_experts_output_over_the_batch_before_swish(
    normalized: bool,
) -> None:
    backbone = _backbone(expert_normalization=normalized, feature_gate=False)
    x = tf.random.normal([256, 6], mean=3.0, stddev=5.0, seed=8)
    backbone(x, training=True)
    block = backbone.meta.blocks[0]  # the shared experts
    out = block(x, training=True).numpy()
    for k, expert in enumerate(block.experts.experts):
        dense = expert.dense_layers[0]
        z = x.numpy() @ dense.kernel.numpy() + dense.bias.numpy()
        assert np.abs(z.mean(axis=0)).max() > 0.5  # off scale before the norm: it does something
        if normalized:  # BatchNorm at init: gamma 1, beta 0, epsilon 1e-3
            z = (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + 1e-3)
            np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
            np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-2)
        np.testing.assert_allclose(out[:, k], _swish(z), rtol=1e-4, atol=1e-4)


def _fit(tasks: list[dict], config: dict) -> tuple[RankingModel, float, float]:
    """A HoME model on 512 rows: the loss before and after 2 epochs (eager: tracing the steps
    costs more than running them)."""
    schema = click_log_schema(tasks=tasks, **({"products": []} if len(tasks) == 1 else {}))
    features, labels = make_data(512, seed=5)
    labels["dwell_seconds"] = np.linspace(0.0, 3.0, 512).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((features, labels))
    keras.utils.set_random_seed(3)
    model = RankingModel(schema, "home", {"expert_units": [8], "tower_units": [8], **config})
    model.adapt([features])
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    before = model.evaluate(data.batch(512), verbose=0, return_dict=True)["loss"]
    model.fit(data.batch(128), epochs=2, verbose=0)
    return model, before, model.evaluate(data.batch(512), verbose=0, return_dict=True)["loss"]


@pytest.mark.parametrize(("tasks", "groups"), [(1, None), (2, [[0], [1]]), (3, [[0, 1], [2]])])
def test_trains_with_one_two_and_three_tasks(tasks: int, groups: list | None) -> None:
    _, before, after = _fit(THREE_TASKS[:tasks], {"task_groups": groups})
    assert np.isfinite(after) and after < before


def test_with_every_part_switched_off_it_has_none_of_them_and_still_trains() -> None:
    off = {"feature_gate": False, "self_gate": False, "expert_normalization": False}
    model, before, after = _fit(THREE_TASKS[:2], {**off, "task_groups": [[0], [1]]})
    assert np.isfinite(after) and after < before
    kinds = {type(layer) for layer in model.backbone._flatten_layers()}
    assert not kinds & {FeatureGate, SelfGate, keras.layers.BatchNormalization}
    # ...while the defaults have all three (so the check above can fail)
    on = _backbone()
    on(tf.ones([2, 6]))
    kinds = {type(layer) for layer in on._flatten_layers()}
    assert {FeatureGate, SelfGate, keras.layers.BatchNormalization} <= kinds


def test_get_config_round_trips_and_rebuilds_the_same_model() -> None:
    backbone = _backbone(
        3, task_groups=[[2], [0, 1]], shared_experts=1, group_experts=2, specific_experts=2
    )
    clone = HoME.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert backbone.get_config()["task_groups"] == [[2], [0, 1]]
    x = tf.random.normal([8, 5], seed=9)
    backbone(x), clone(x)
    clone.set_weights(backbone.get_weights())
    for a, b in zip(backbone(x), clone(x), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    layers: list[keras.layers.Layer] = [
        FeatureGate(2, up_initializer="ones"),
        FeatureGatedExperts(MLP([3], batch_norm=True), 2, feature_gate_rank=4),
        SelfGate(2),
        HierarchyLevel(MLP([3]), [2, 1], [[0], [0, 1]], [None, 1], feature_gate_rank=2),
    ]
    for layer in layers:
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


def test_task_groups_by_name_resolve_against_the_task_names() -> None:
    hp = HoME.parse_config({"task_groups": [["cvr"], ["ctr"]]})
    assert HoME.from_hparams(hp, 2, task_names=["ctr", "cvr"]).task_groups == [[1], [0]]
    with pytest.raises(ConfigError, match="task_groups: 'ctx' is not a task; tasks: ctr, cvr"):
        HoME.from_hparams(HoME.parse_config({"task_groups": [["ctx", "cvr"]]}), 2, ["ctr", "cvr"])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"task_groups": [[0]]}, "task_groups: task 1 is in no group"),
        ({"task_groups": [[0, 1], [1]]}, "task_groups: task 1 is in more than one group"),
        ({"task_groups": [[0], [2]]}, "task_groups: task 2 is not one of the 2 tasks"),
        ({"task_groups": [[0, 1], []]}, "task_groups: every group needs at least one task"),
        ({"task_groups": [["ctr"], ["cvr"]]}, "task_groups: names task 'ctr', but no task names"),
        ({"task_group": [[0, 1]]}, "task_group: unknown key"),
        ({"shared_experts": 0, "group_experts": 0}, "shared_experts \\+ group_experts must be"),
        ({"expert_activation": "relu6"}, "expert_activation: .*got 'relu6'"),
    ],
)
def test_bad_config_errors_name_the_key_and_the_problem(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"architecture 'home': {message}"):
        RankingModel(click_log_schema(), "home", config)


def test_the_layer_itself_rejects_bad_task_groups_showing_them() -> None:
    with pytest.raises(ValueError, match=r"HoME task_groups: task 1 is in no group, got \[\[0\]\]"):
        HoME(2, MLP([4]), task_groups=[[0]])
    with pytest.raises(ValueError, match="HoME needs shared_experts \\+ group_experts >= 1"):
        HoME(2, MLP([4]), shared_experts=0, group_experts=0)
