"""The balancing framework (`ranker.balancing`): strategy specs, the fixed and uncertainty
strategies' values, and the gradient path of the training step."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from ranker import balancing
from ranker.balancing.base import Balancer, Gradients
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.model import RankingModel
from ranker.schema import Schema

LOSSES = {"ctr": tf.constant(0.5), "cvr": tf.constant(2.0), "ctcvr": tf.constant(0.1)}


def test_a_strategy_is_named_by_a_string_or_a_mapping() -> None:
    cls, config = balancing.parse("fixed")
    assert cls.name_in_registry == "fixed" and config.model_dump() == {}
    assert balancing.parse({"name": "uncertainty"})[0].name_in_registry == "uncertainty"
    assert {"fixed", "uncertainty"} <= set(balancing.names())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pcgrd", r"loss_weighting: unknown strategy 'pcgrd'; known: fixed, uncertainty"),
        (
            {"name": "fixed", "temperature": 2},
            r"loss_weighting \(fixed\): temperature: unknown key",
        ),
        ({"c": 0.4}, r"expected a strategy name or a mapping with 'name'"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_problem(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        balancing.parse(spec)


def test_fixed_weights_the_losses_by_the_task_weights() -> None:
    fixed = balancing.build("fixed", ["ctr", "cvr", "ctcvr"], {"cvr": 0.5})
    assert float(fixed(LOSSES, training=True)) == pytest.approx(0.5 + 1.0 + 0.1)
    np.testing.assert_allclose(fixed.effective.numpy(), [1.0, 0.5, 1.0])


def test_uncertainty_is_exp_minus_s_times_the_loss_plus_s() -> None:
    strategy = balancing.build("uncertainty", ["ctr", "cvr", "ctcvr"], {})
    strategy(LOSSES)
    assert float(strategy(LOSSES, training=True)) == pytest.approx(2.6)  # s = 0: the plain sum
    strategy.log_vars["cvr"].assign(np.log(2.0))  # s_cvr = log 2: half the weight, + log 2
    expected = 0.5 + 2.0 / 2 + np.log(2.0) + 0.1
    assert float(strategy(LOSSES, training=True)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(strategy.effective.numpy(), [1.0, 0.5, 1.0], rtol=1e-6)


class _FixedThroughGradients(Balancer):
    """A gradient strategy that chooses the fixed weights: its step must be fixed's step."""

    gradients: ClassVar[Gradients] = "shared"
    seen: ClassVar[list[tuple[int, ...]]] = []

    def combine(self, gradients: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        _FixedThroughGradients.seen.append(tuple(gradients.shape))
        return tf.constant(self.fixed, tf.float32)


class _FixedThroughRepresentation(_FixedThroughGradients):
    gradients: ClassVar[Gradients] = "representation"


def _one_step(
    schema: Schema, data: tuple, balancer: type[Balancer] | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The trainable variables before and after one SGD step of MMoE with `balancer` (fixed if
    None), task weights {cvr: 0.5}, from the same seed."""
    features, labels = data
    batch = ({k: v[:256] for k, v in features.items()}, {k: v[:256] for k, v in labels.items()})
    keras.utils.set_random_seed(3)
    model = RankingModel(schema, "mmoe", {"num_experts": 2, "expert_units": [8]})
    model(batch[0])
    outputs = [objective.output for objective in model.objectives]
    if balancer is None:
        model.balancer = balancing.build("fixed", outputs, {"cvr": 0.5})
    else:
        model.balancer = balancer(outputs, {"cvr": 0.5}, name="balancing")
    model.compile(optimizer=keras.optimizers.legacy.SGD(0.5))
    before = [v.numpy() for v in model.trainable_variables]
    model.train_step(tf.nest.map_structure(tf.convert_to_tensor, batch))
    return before, [v.numpy() for v in model.trainable_variables]


@pytest.mark.parametrize("strategy", [_FixedThroughGradients, _FixedThroughRepresentation])
def test_a_gradient_strategy_that_picks_the_fixed_weights_makes_the_fixed_step(
    schema: Schema, data: tuple, strategy: type[Balancer]
) -> None:
    _FixedThroughGradients.seen.clear()
    start, fixed = _one_step(schema, data, None)
    same_start, through = _one_step(schema, data, strategy)
    assert _FixedThroughGradients.seen and _FixedThroughGradients.seen[0][0] == 2  # T = 2 tasks
    for a, b in zip(start, same_start, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fixed, through, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    moved = sum(not np.allclose(a, b) for a, b in zip(start, fixed, strict=True))
    assert moved >= len(start) - 2  # the step moved (nearly) every variable: not a trivial match
