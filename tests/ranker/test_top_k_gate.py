"""The noisy top-k gate (ranker/layers/top_k_gate.py) and its `gate: noisy_top_k` option: k
experts a row, weights summing to 1, noise in training only, the balance loss by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.gates import gate_config
from ranker.layers.top_k_gate import NoisyTopKGate
from ranker.model import RankingModel
from tests.ranker.conftest import click_log_schema, make_data


def _gate(num_experts: int, k: int, kernel: np.ndarray, **kwargs) -> NoisyTopKGate:
    gate = NoisyTopKGate(num_experts, k=k, **kwargs)
    gate.build(tf.TensorShape([None, kernel.shape[0]]))
    gate.logits.kernel.assign(kernel)
    return gate


def test_k_1_routes_every_example_to_exactly_one_expert() -> None:
    x = tf.random.normal([64, 6], seed=1)
    gate = NoisyTopKGate(5, k=1, kernel_initializer="glorot_uniform")
    for training in (False, True):
        weights = gate(x, training=training).numpy()
        assert ((weights > 0).sum(axis=1) == 1).all()
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    # the expert is the one with the largest clean logit, at inference
    expected = np.argmax(gate.logits(x).numpy(), axis=1)
    np.testing.assert_array_equal(np.argmax(gate(x, training=False).numpy(), axis=1), expected)


def test_top_2_weights_are_the_softmax_of_the_two_best_logits() -> None:
    kernel = np.array([[1.0, 2.0, 0.0, -1.0]], np.float32)  # logits = x * kernel
    gate = _gate(4, 2, kernel, noise=False)
    weights = gate(tf.constant([[1.0], [-1.0]]), training=True).numpy()
    first = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()  # experts 0 and 1
    second = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()  # experts 2 and 3 (logits 0, 1)
    np.testing.assert_allclose(weights[0], [*first, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(weights[1], [0.0, 0.0, *second], atol=1e-6)


def test_noise_only_in_training_so_the_export_is_deterministic() -> None:
    gate = NoisyTopKGate(8, k=2, kernel_initializer="glorot_uniform")
    gate(tf.zeros([1, 4]))
    gate.noise_scale.kernel.assign(tf.ones([4, 8]) * 3.0)  # large noise
    x = tf.random.normal([32, 4], seed=2)
    np.testing.assert_array_equal(gate(x, training=False).numpy(), gate(x, training=False).numpy())
    noisy = [gate(x, training=True).numpy() for _ in range(2)]
    assert not np.array_equal(noisy[0], noisy[1])  # so the test can fail


def test_balance_loss_by_hand() -> None:
    # 4 rows, 2 experts, k = 1: logits (x, -x); rows 0-2 pick expert 0, row 3 expert 1
    kernel = np.array([[1.0, -1.0]], np.float32)
    gate = _gate(2, 1, kernel, noise=False, balance_weight=0.5)
    x = np.array([[1.0], [2.0], [0.5], [-1.0]], np.float32)
    gate(tf.constant(x))
    logits = np.concatenate([x, -x], axis=1)
    probability = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).mean(axis=0)
    share = np.array([0.75, 0.25])
    assert gate.losses[-1].numpy() == pytest.approx(0.5 * 2 * (share * probability).sum(), 1e-6)
    # uniform routing and probabilities give exactly the weight
    uniform = _gate(2, 1, np.zeros((1, 2), np.float32), noise=False, balance_weight=0.5)
    assert uniform.balance_loss(
        tf.zeros([4, 2]), tf.constant([[1.0, 0]] * 2 + [[0, 1.0]] * 2)
    ).numpy() == (pytest.approx(0.5))


@pytest.mark.parametrize("architecture", ["mmoe", "cgc", "ple"])
def test_the_gate_option_trains_and_round_trips(architecture: str) -> None:
    schema = click_log_schema()
    features, labels = make_data(1024, seed=4)
    keras.utils.set_random_seed(0)
    model = RankingModel(schema, architecture, {"gate": {"kind": "noisy_top_k", "k": 1}})
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    before = model.evaluate(data, verbose=0, return_dict=True)["loss"]
    model.fit(data, epochs=2, verbose=0)
    assert model.evaluate(data, verbose=0, return_dict=True)["loss"] < 0.95 * before
    gates = model.gate_weights({k: v[:64] for k, v in features.items()})
    for weights in gates.values():
        assert ((weights.numpy() > 0).sum(axis=1) == 1).all()
    assert any(isinstance(m, NoisyTopKGate) for m in model.backbone.submodules)
    again = RankingModel(**model.get_config())
    assert again.hparams == model.hparams


def test_bad_arguments_and_config_name_the_problem() -> None:
    with pytest.raises(ValueError, match="k must be in \\[1, num_experts=4\\], got 5"):
        NoisyTopKGate(4, k=5)
    with pytest.raises(ValueError, match="balance_weight must be >= 0, got -1"):
        NoisyTopKGate(4, balance_weight=-1)
    with pytest.raises(ConfigError, match=r"gate\.k: 5 is more than the 4 experts"):
        RankingModel(click_log_schema(), "mmoe", {"gate": {"kind": "noisy_top_k", "k": 5}})
    with pytest.raises(ConfigError, match=r"gate\.noisy_top_k\.kk: unknown key"):
        RankingModel(click_log_schema(), "mmoe", {"gate": {"kind": "noisy_top_k", "kk": 1}})
    assert gate_config("noisy_top_k").k == 2


def test_get_config_round_trip() -> None:
    gate = NoisyTopKGate(6, k=3, noise=False, balance_weight=0.1)
    again = NoisyTopKGate.from_config(gate.get_config())
    assert again.get_config() == gate.get_config()
