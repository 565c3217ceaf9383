"""The loss-weighting strategies of `ranker.balancing` (random_weights, dwa, gradnorm, dtp, famo):
hand-computed coefficients and state updates, their configs' bounds, and a short fit with each."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np
import pytest

from ranker import balancing
from ranker.balancing.base import Balancer
from ranker.balancing.dtp import DynamicTaskPrioritization
from ranker.balancing.dwa import DynamicWeightAverage
from ranker.balancing.famo import FAMO
from ranker.balancing.gradnorm import GradNorm
from ranker.balancing.random_weights import RandomWeights
from ranker.errors import ConfigError
from ranker.keras_compat import tf

OUTPUTS = ["ctr", "cvr"]
WEIGHTING = ["random_weights", "dwa", "gradnorm", "dtp", "famo"]


S = TypeVar("S", bound=Balancer)


def _build(spec: str | dict[str, Any], kind: type[S], weights: dict[str, float] | None = None) -> S:
    """The strategy `spec` names over ctr and cvr, built as the model builds it (by name)."""
    strategy = balancing.build(spec, OUTPUTS, weights or {})
    assert isinstance(strategy, kind)
    return strategy


def _coefficients(strategy: Balancer, losses: list[float], training: bool = True) -> np.ndarray:
    return strategy.coefficients(tf.constant(losses), training=training).numpy()


def test_the_loss_weighting_strategies_are_registered() -> None:
    assert set(WEIGHTING) <= set(balancing.names())


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "dwa", "temperature": 0}, "temperature"),
        ({"name": "gradnorm", "alpha": -1}, "alpha"),
        ({"name": "gradnorm", "learning_rate": 0}, "learning_rate"),
        ({"name": "dtp", "alpha": 1.5}, "alpha"),
        ({"name": "dtp", "eps": 0.5}, "eps"),
        ({"name": "famo", "weight_decay": -0.1}, "weight_decay"),
        ({"name": "random_weights", "dist": "normal"}, "dist"),
    ],
)
def test_a_hyperparameter_out_of_bounds_is_an_error_naming_it(spec: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"\({spec['name']}\): {field}"):
        balancing.parse(spec)


# ---- random_weights ------------------------------------------------------------------------------


def test_random_weights_sum_to_the_task_count_and_change_every_step() -> None:
    strategy = balancing.build("random_weights", ["ctr", "cvr", "ctcvr"], {})
    draws = np.stack([_coefficients(strategy, [0.5, 0.2, 0.1]) for _ in range(200)])
    np.testing.assert_allclose(draws.sum(axis=1), 3.0, rtol=1e-5)  # T * softmax(z)
    assert (draws > 0).all()
    assert not np.allclose(draws[0], draws[1])  # a fresh z each step
    np.testing.assert_allclose(draws.mean(axis=0), [1.0, 1.0, 1.0], atol=0.2)  # on average: w
    assert draws.std(axis=0).min() > 0.1  # so the check above can fail: they do vary


def test_random_weights_scale_by_the_fixed_weights_and_validate_with_them() -> None:
    strategy = _build("random_weights", RandomWeights, {"cvr": 0.5})
    c = _coefficients(strategy, [0.5, 0.2])
    assert c[0] + c[1] / 0.5 == pytest.approx(2.0, rel=1e-5)  # c / w sums to T
    np.testing.assert_array_equal(_coefficients(strategy, [0.5, 0.2], training=False), [1.0, 0.5])


# ---- dwa -----------------------------------------------------------------------------------------


def test_dwa_weights_from_a_known_loss_history() -> None:
    strategy = _build("dwa", DynamicWeightAverage)
    np.testing.assert_array_equal(_coefficients(strategy, [1.0, 1.0]), [1.0, 1.0])  # epoch 1
    strategy.end_epoch({"ctr": 1.0, "cvr": 2.0})
    np.testing.assert_array_equal(_coefficients(strategy, [1.0, 1.0]), [1.0, 1.0])  # epoch 2
    strategy.end_epoch({"ctr": 0.5, "cvr": 1.8})
    # r = (0.5 / 1.0, 1.8 / 2.0) = (0.5, 0.9); / Temp 2 = (0.25, 0.45); exp = (1.284025, 1.568312),
    # sum 2.852338; w = 2 * exp / sum = (0.900332, 1.099668): cvr's loss fell least, it gains.
    np.testing.assert_allclose(_coefficients(strategy, [1.0, 1.0]), [0.900332, 1.099668], rtol=1e-5)
    strategy.end_epoch({"ctr": 0.45, "cvr": 0.9})  # r = (0.9, 0.5): the weights swap
    np.testing.assert_allclose(_coefficients(strategy, [1.0, 1.0]), [1.099668, 0.900332], rtol=1e-5)
    strategy.end_epoch({"ctr": 0.4})  # an epoch without cvr's loss changes nothing
    np.testing.assert_allclose(_coefficients(strategy, [1.0, 1.0]), [1.099668, 0.900332], rtol=1e-5)


def test_dwa_scales_by_the_fixed_weights_and_validates_with_them() -> None:
    strategy = _build({"name": "dwa", "temperature": 1.0}, DynamicWeightAverage, {"cvr": 0.5})
    strategy.end_epoch({"ctr": 1.0, "cvr": 1.0})
    strategy.end_epoch({"ctr": 1.0, "cvr": 2.0})
    # r = (1, 2), Temp 1: w = 2 * (e, e^2) / (e + e^2) = (0.537883, 1.462117); c = w * (1, 0.5)
    np.testing.assert_allclose(_coefficients(strategy, [1.0, 1.0]), [0.537883, 0.731059], rtol=1e-5)
    np.testing.assert_array_equal(_coefficients(strategy, [1.0, 1.0], training=False), [1.0, 0.5])


# ---- gradnorm ------------------------------------------------------------------------------------


def test_gradnorm_lowers_a_weight_above_its_target_and_raises_one_below() -> None:
    strategy = _build("gradnorm", GradNorm)
    # Step 1 records L(0) = (1, 1): r = (1, 1). ||g|| = (3, 1), w = (1, 1): G = (3, 1), mean 2,
    # target (2, 2). ctr above: w = 1 - 0.025 * 3 = 0.925; cvr below: 1 + 0.025 * 1 = 1.025;
    # renormalized to sum 2: (0.925, 1.025) * 2 / 1.95 = (0.948718, 1.051282).
    first = strategy.combine(
        tf.constant([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), tf.constant([1.0, 1.0])
    )
    np.testing.assert_allclose(first.numpy(), [0.948718, 1.051282], rtol=1e-5)
    # Step 2: ctr's loss halved, cvr's stayed: L / L(0) = (0.5, 1), mean 0.75, r = (2/3, 4/3).
    # ||g|| = (1, 1): G = w = (0.948718, 1.051282), mean 1, target = r^1.5 = (0.5443, 1.5396).
    # ctr trains faster: its G is above its target though below the mean; lowered by 0.025, cvr
    # raised by 0.025 (the sum stays 2).
    second = strategy.combine(
        tf.constant([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), tf.constant([0.5, 1.0])
    )
    np.testing.assert_allclose(second.numpy(), [0.923718, 1.076282], rtol=1e-5)
    np.testing.assert_allclose(strategy.learned.numpy(), second.numpy())
    np.testing.assert_allclose(strategy.initial_losses.numpy(), [1.0, 1.0])


def test_gradnorm_starts_from_the_fixed_weights_and_keeps_a_zero_weight_at_zero() -> None:
    strategy = _build("gradnorm", GradNorm, {"cvr": 0.0})
    np.testing.assert_array_equal(strategy.learned.numpy(), [1.0, 0.0])
    gradients = tf.constant([[3.0, 0.0], [0.0, 1.0]])
    for losses in ([1.0, 1.0], [0.5, 2.0]):
        c = strategy.combine(gradients, tf.constant(losses))
        np.testing.assert_allclose(c.numpy(), [1.0, 0.0])  # alone: G = its target, no step


# ---- dtp -----------------------------------------------------------------------------------------


def test_dtp_weights_from_known_kpis() -> None:
    strategy = _build("dtp", DynamicTaskPrioritization)
    # KPI = exp(-L): (0.8, 0.3); kappa starts at the first KPI.
    # w = -(1 - kappa)^2 log kappa = (0.04 * 0.223144, 0.49 * 1.203973) = (0.008926, 0.589947)
    c = _coefficients(strategy, [-math.log(0.8), -math.log(0.3)])
    np.testing.assert_allclose(c, [0.008926, 0.589947], rtol=1e-4)  # the hard task dominates
    # KPI (0.6, 0.3): kappa = 0.9 * 0.6 + 0.1 * 0.8 = 0.62 for ctr, 0.3 for cvr;
    # w_ctr = -(0.38)^2 log 0.62 = 0.1444 * 0.478036 = 0.069029
    c = _coefficients(strategy, [-math.log(0.6), -math.log(0.3)])
    np.testing.assert_allclose(c, [0.069029, 0.589947], rtol=1e-4)
    np.testing.assert_allclose(strategy.kappa.numpy(), [0.62, 0.3], rtol=1e-5)


def test_dtp_clips_kappa_and_validates_with_the_fixed_weights() -> None:
    strategy = _build("dtp", DynamicTaskPrioritization, {"cvr": 0.5})
    c = _coefficients(strategy, [0.0, 50.0])  # KPI 1 and ~0: clipped to 0.999 and 0.001
    expected = [-(0.001**2) * math.log(0.999), -(0.999**2) * math.log(0.001) * 0.5]
    np.testing.assert_allclose(c, expected, rtol=1e-3)
    kappa = strategy.kappa.numpy()
    np.testing.assert_array_equal(_coefficients(strategy, [0.1, 0.1], training=False), [1.0, 0.5])
    np.testing.assert_array_equal(strategy.kappa.numpy(), kappa)


# ---- famo ----------------------------------------------------------------------------------------


def test_famo_over_a_known_pair_of_steps() -> None:
    strategy = _build("famo", FAMO)
    # Step 1: xi = 0, z = (0.5, 0.5), L = (1, 2): c = (z / L) / sum(z / L) = (0.5, 0.25) / 0.75.
    np.testing.assert_allclose(_coefficients(strategy, [1.0, 2.0]), [2 / 3, 1 / 3], rtol=1e-5)
    # Step 2, L = (0.5, 1.8): delta = log L(1) - log L(2) = (log 2, log(2 / 1.8)) = (0.6931, 0.1054);
    # grad_xi = z * (delta - z . delta) = 0.5 * (0.2939, -0.2939): ctr's loss fell more. Adam's
    # first step is lr * sign: xi = (-0.025, 0.025), z = (0.487503, 0.512497);
    # z / L = (0.975005, 0.284721), sum 1.259726: c = (0.773982, 0.226018).
    c = _coefficients(strategy, [0.5, 1.8])
    np.testing.assert_allclose(strategy.logits.numpy(), [-0.025, 0.025], rtol=1e-4)
    np.testing.assert_allclose(c, [0.773982, 0.226018], rtol=1e-5)


def test_famo_scales_by_the_fixed_weights_and_validates_with_them() -> None:
    strategy = _build("famo", FAMO, {"cvr": 0.5})
    np.testing.assert_allclose(_coefficients(strategy, [1.0, 2.0]), [2 / 3, 1 / 6], rtol=1e-5)
    np.testing.assert_array_equal(_coefficients(strategy, [0.5, 1.8], training=False), [1.0, 0.5])
    np.testing.assert_array_equal(strategy.logits.numpy(), [0.0, 0.0])
