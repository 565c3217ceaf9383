"""Dynamic weight average (DWA): weight each task by how slowly its loss fell over the last epoch.

From "End-to-End Multi-Task Learning with Attention" (Liu, Johns and Davison, CVPR 2019). With
L_k(t) the mean loss of task k over epoch t, the weights for epoch t are

    r_k = L_k(t-1) / L_k(t-2),    lambda_k(t) = T * exp(r_k / Temp) / sum_i exp(r_i / Temp)

and lambda = 1 for the first two epochs (no two past epochs yet). A task whose loss dropped least
(r_k near or above 1) gets the larger weight; the weights sum to T. Temp = 2 (the paper's).

Here c_k = w_k * lambda_k with the tasks' fixed weights w (equal ratios: c = w). The epoch means
come from `end_epoch` (the trainer's `BalancingMonitor` passes the epoch's logged `{output}_loss`);
an epoch whose logs lack a task's loss leaves the state as it is. A zero mean loss is floored at
1e-12 in the ratio. Validation (`training=False`) weights by w alone, so the validation loss is the
same objective every epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from ranker.balancing.base import Balancer, StrategyConfig
from ranker.balancing.registry import register
from ranker.keras_compat import tf


class DWAConfig(StrategyConfig):
    temperature: float = Field(2.0, gt=0)  # the softmax temperature (the paper's T = 2)


@register("dwa")
class DynamicWeightAverage(Balancer):
    """c = w * lambda, lambda from the last two epochs' mean losses (module docstring)."""

    Config: ClassVar[type[StrategyConfig]] = DWAConfig
    config: DWAConfig

    def create_state(self) -> None:
        self.lambdas = self.add_state("dwa_lambdas", [1.0] * self.num_tasks)  # this epoch's
        self.last_losses = self.add_state("dwa_last_losses", [0.0] * self.num_tasks)
        self.epochs = self.add_state("dwa_epochs", 0.0)  # epochs seen by `end_epoch`

    def coefficients(self, losses: tf.Tensor, training: bool) -> tf.Tensor:
        fixed = tf.constant(self.fixed, tf.float32)
        return fixed * self.lambdas if training else fixed

    def end_epoch(self, losses: Mapping[str, float]) -> None:
        if any(name not in losses for name in self.outputs):
            return
        current = tf.constant([losses[name] for name in self.outputs], tf.float32)
        if float(self.epochs.numpy()) >= 1:
            ratios = current / tf.maximum(self.last_losses, 1e-12)
            softmax = tf.nn.softmax(ratios / self.config.temperature)
            self.lambdas.assign(float(self.num_tasks) * softmax)
        self.last_losses.assign(current)
        self.epochs.assign_add(1.0)
