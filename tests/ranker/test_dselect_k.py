"""DSelect-k (Hazimeh et al., NeurIPS 2021): the smooth step, selectors that are exactly one-hot,
at most k experts per example, the entropy and reachability losses, and the `gate:` option of
every gated architecture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ranker.architectures.mmoe import MMoEConfig
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.cgc import CGC
from ranker.layers.experts import Gate
from ranker.layers.gates import DSelectKGate, DSelectKGateConfig, SoftmaxGateConfig, smooth_step
from ranker.layers.mlp import MLP
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import make_data

SATURATED = keras.initializers.Constant(1.0)  # every code logit 1.0 >= gamma / 2 on a zero input


def _set(gate: DSelectKGate, code_bias: list[float], selector_bias: list[float]) -> None:
    """Zero kernels: every example gets the logits `code_bias` (selector by selector, most
    significant bit first) and selector logits `selector_bias`."""
    width = gate.code_logits.kernel.shape[0]
    gate.code_logits.set_weights([np.zeros([width, len(code_bias)]), np.array(code_bias)])
    gate.selector_logits.set_weights(
        [np.zeros([width, len(selector_bias)]), np.array(selector_bias)]
    )


def test_smooth_step_is_0_then_a_cubic_then_1() -> None:
    gamma = 2.0
    t = tf.constant([-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0])
    # the cubic -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2 at t = 0.5: -1/32 + 3/8 + 1/2 = 27/32
    expected = [0.0, 0.0, 5 / 32, 0.5, 27 / 32, 1.0, 1.0]
    np.testing.assert_allclose(smooth_step(t, gamma).numpy(), expected, atol=1e-7)
    # continuous at the ends of the cubic part: the cubic itself gives 0 and 1 there
    cubic = -2 * 1.0**3 / gamma**3 + 3 * 1.0 / (2 * gamma) + 0.5
    assert cubic == pytest.approx(1.0)


def test_saturated_selectors_are_exactly_one_hot() -> None:
    gate = DSelectKGate(8, k=3, code_initializer=SATURATED)
    x = tf.zeros([4, 5])
    selectors = gate.selectors(x).numpy()  # every bit reads 1: code 111, expert 7
    assert selectors.shape == (4, 3, 8)
    np.testing.assert_array_equal(selectors, np.eye(8)[[7, 7, 7]][np.newaxis].repeat(4, axis=0))
    weights = gate(x).numpy()  # one expert only; its weight 1 to float32 rounding of the mix
    np.testing.assert_array_equal(weights > 0, np.eye(8)[[7] * 4] > 0)
    np.testing.assert_allclose(weights, np.eye(8)[[7] * 4], atol=1e-6)


def test_k_distinct_selections_give_weight_to_exactly_k_experts() -> None:
    gate = DSelectKGate(8, k=3)
    gate(tf.zeros([1, 5]))
    # selector codes 000, 101, 110 (experts 0, 5, 6); mixture softmax(log 1, log 2, log 3)
    _set(gate, [-1, -1, -1, 1, -1, 1, 1, 1, -1], [0.0, math.log(2.0), math.log(3.0)])
    weights = gate(tf.random.normal([6, 5], seed=3)).numpy()
    expected = np.zeros(8)
    expected[[0, 5, 6]] = [1 / 6, 2 / 6, 3 / 6]
    np.testing.assert_allclose(weights, np.tile(expected, (6, 1)), atol=1e-6)
    assert ((weights > 0).sum(axis=1) == 3).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    # ...and with selectors that coincide, fewer than k (the test can fail)
    _set(gate, [1, 1, 1] * 3, [0.0, 0.0, 0.0])
    assert ((gate(tf.zeros([2, 5])).numpy() > 0).sum(axis=1) == 1).all()


def test_the_selection_depends_on_the_example() -> None:
    gate = DSelectKGate(4, k=1, code_initializer=SATURATED)
    # logits = x * 1 + 1 on both bits: x = 1 reads 11 (expert 3), x = -3 reads 00 (expert 0)
    weights = gate(tf.constant([[1.0], [-3.0]])).numpy()
    np.testing.assert_array_equal(weights, np.eye(4)[[3, 0]])


def test_entropy_regularizer_is_the_weighted_mean_selector_entropy() -> None:
    gate = DSelectKGate(4, k=2, entropy_weight=0.1, code_initializer="zeros")
    gate(tf.ones([3, 5]))  # every smooth step 1/2: both selectors uniform over 4 experts
    (loss,) = gate.losses
    per_selector = -4 * 0.25 * math.log(0.25 + 1e-6)  # ~ log 4
    assert float(loss) == pytest.approx(0.1 * 2 * per_selector, rel=1e-6)
    one_hot = DSelectKGate(4, k=2, entropy_weight=0.1, code_initializer=SATURATED)
    one_hot(tf.zeros([3, 5]))
    assert abs(float(one_hot.losses[0])) < 1e-6
    unregularized = DSelectKGate(4, k=2, code_initializer="zeros")
    unregularized(tf.ones([3, 5]))
    assert unregularized.losses == []  # four experts: every code names one, no reachability term


def test_experts_not_a_power_of_two_only_existing_experts_get_weight() -> None:
    gate = DSelectKGate(5, k=2)  # 3 bits: codes 5, 6, 7 name no expert
    gate(tf.zeros([1, 4]))
    # selector 0 on code 111 (no expert), selector 1 on code 011 (expert 3)
    _set(gate, [1, 1, 1, -1, 1, 1], [0.0, 0.0])
    weights = gate(tf.random.normal([3, 4], seed=5)).numpy()
    assert weights.shape == (3, 5)
    np.testing.assert_allclose(weights, np.eye(5)[[3, 3, 3]], atol=1e-6)
    # with arbitrary weights every row is a distribution over the 5 experts
    wide = DSelectKGate(
        5, k=3, code_initializer=keras.initializers.RandomNormal(stddev=2.0, seed=1)
    )
    weights = wide(tf.random.normal([64, 4], seed=6)).numpy()
    assert weights.shape == (64, 5) and (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)


def test_reachability_loss_is_zero_once_the_selectors_name_experts() -> None:
    gate = DSelectKGate(3, k=2, code_initializer="zeros")  # codes 00, 01, 10; 11 names none
    gate(tf.ones([2, 4]))  # every code weighs 1/4: 3/4 on the experts, per selector 4/3 - 1
    (loss,) = gate.losses
    assert float(loss) == pytest.approx(2 * (4 / 3 - 1), rel=1e-6)
    _set(gate, [-1, 1, 1, -1], [0.0, 0.0])  # experts 1 and 2
    gate(tf.ones([2, 4]))
    assert float(gate.losses[0]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_experts": 0},
        {"num_experts": 4, "k": 0},
        {"num_experts": 4, "gamma": 0.0},
        {"num_experts": 4, "entropy_weight": -0.1},
    ],
)
def test_dselect_k_gate_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="DSelectKGate"):
        DSelectKGate(**kwargs)


@pytest.mark.parametrize(
    "layer",
    [
        DSelectKGate(5, k=3, gamma=0.5, entropy_weight=0.01),
        CGC(num_tasks=2, expert=MLP([4]), emit_shared=True, gate={"kind": "dselect_k", "k": 1}),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trips(layer: keras.layers.Layer) -> None:
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    assert type(keras.layers.deserialize(keras.layers.serialize(layer))) is type(layer)


@pytest.mark.parametrize(
    ("architecture", "hparams"),
    [
        ("mmoe", {"gate": "dselect_k"}),
        ("cgc", {"gate": {"kind": "dselect_k", "k": 1, "entropy_weight": 0.01}}),
        ("ple", {"gate": "dselect_k"}),
        ("dselect_k", {"num_experts": 5}),
    ],
)
def test_gated_architectures_train_with_dselect_k(
    architecture: str, hparams: dict, schema: Schema
) -> None:
    features, labels = make_data(1024, seed=1)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(256)
    keras.utils.set_random_seed(3)
    model = RankingModel(schema, architecture, {"expert_units": [16], **hparams})
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)  # no tracing: faster
    before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    model.fit(dataset, epochs=2, verbose=0)
    after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert after < 0.95 * before, (before, after)
    assert not [m for m in model.backbone.submodules if isinstance(m, Gate)]
    assert [m for m in model.backbone.submodules if isinstance(m, DSelectKGate)]
    for w in model.gate_weights({k: v[:8] for k, v in features.items()}).values():
        assert w.shape[0] == 8 and w.shape[1] >= 3  # [B, E]
        np.testing.assert_allclose(w.numpy().sum(axis=1), 1.0, atol=1e-5)
    config = model.backbone.get_config()
    assert type(model.backbone).from_config(config).get_config() == config


def test_gate_losses_reach_the_models_regularization_loss(schema: Schema) -> None:
    features, _ = make_data(32)
    plain = RankingModel(schema, "ple", {"embedding_l2": 0.0})
    gated = RankingModel(schema, "ple", {"embedding_l2": 0.0, "gate": "dselect_k"})
    plain(features), gated(features)
    # PLE's task gates weigh 1 + 2 experts (not a power of 2): 2 tasks x 2 levels of them
    assert plain.losses == [] and len(gated.losses) == 4
    assert all(float(loss) > 0 for loss in gated.losses)


def test_default_gate_stays_softmax(schema: Schema) -> None:
    assert MMoEConfig().gate == SoftmaxGateConfig()
    features, _ = make_data(16)
    for architecture, name in [("mmoe", "gate_0/logits/kernel"), ("ple", "task_0_gate/logits")]:
        model = RankingModel(schema, architecture)
        model(features)
        assert any(name in v.name for v in model.backbone.weights), architecture
        assert not any("code_logits" in v.name for v in model.backbone.weights)
    dselect_k = RankingModel(schema, "dselect_k")
    assert dselect_k.backbone.gate_config == DSelectKGateConfig()
    assert all(isinstance(gate, DSelectKGate) for gate in dselect_k.backbone.gates)


def test_gate_config_errors_name_the_key(schema: Schema) -> None:
    with pytest.raises(
        ConfigError, match="architecture 'mmoe': gate: unknown gate 'nope'; known: softmax, dsel"
    ):
        RankingModel(schema, "mmoe", {"gate": "nope"})
    with pytest.raises(ConfigError, match=r"architecture 'ple': gate\.softmax\.k: unknown key"):
        RankingModel(schema, "ple", {"gate": {"kind": "softmax", "k": 2}})
    with pytest.raises(ConfigError, match="architecture 'cgc': gate: a gate needs a kind"):
        RankingModel(schema, "cgc", {"gate": {"k": 2}})
    with pytest.raises(
        ConfigError, match=r"'dselect_k': gate\.dselect_k\.k: .*greater than or equal"
    ):
        RankingModel(schema, "dselect_k", {"gate": {"k": 0}})  # the kind is implied here
