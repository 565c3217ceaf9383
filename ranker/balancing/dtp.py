"""Dynamic task prioritization (DTP): more weight to the tasks the model does worse on.

From "Dynamic Task Prioritization for Multitask Learning" (Guo, Haque, Huang, Yeung and Fei-Fei,
ECCV 2018). With kappa_k in (0, 1) a moving average of task k's key performance indicator (KPI),

    kappa_k <- alpha * KPI_k + (1 - alpha) * kappa_k,    c_k = -(1 - kappa_k)^gamma * log(kappa_k)

a focal-loss-like task weight: a task with a low KPI (hard) gets a large weight, a task near
perfect one near 0. alpha is the paper's discount factor (larger: the newest batches count more),
0.9 by default; gamma = 2 (the paper's task-level focusing parameter).

What we chose where the paper does not fit:
- The paper's KPIs are accuracies (classification, detection AP); ranking tasks have none that is
  cheap per batch, so KPI_k = exp(-L_k): for log-loss tasks, the geometric mean over the batch of
  the probability the model gives the observed label (for a regression loss, a monotone stand-in).
- kappa starts at the first training batch's KPI and is clipped into [eps, 1 - eps] (eps = 1e-3),
  so the weights stay finite; the weights are not normalized (as in the paper), and only the
  task-level priority is used (not the paper's example-level focal loss).
- c_k = w_k * DTP_k with the tasks' fixed weights w; c is a constant of the step (no gradient flows
  through the KPI). Validation (`training=False`) weights by w alone and leaves kappa as it is.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ranker.balancing.base import Balancer, StrategyConfig
from ranker.balancing.registry import register
from ranker.keras_compat import tf


class DTPConfig(StrategyConfig):
    alpha: float = Field(0.9, gt=0, le=1)  # weight of the newest KPI in the moving average
    gamma: float = Field(2.0, ge=0)  # the focusing parameter
    eps: float = Field(1e-3, gt=0, lt=0.5)  # kappa is clipped into [eps, 1 - eps]


@register("dtp")
class DynamicTaskPrioritization(Balancer):
    """c = w * -(1 - kappa)^gamma * log(kappa), kappa a moving average of exp(-L) (docstring)."""

    Config: ClassVar[type[StrategyConfig]] = DTPConfig
    config: DTPConfig

    def create_state(self) -> None:
        self.kappa = self.add_state("dtp_kappa", [0.5] * self.num_tasks)
        self.started = self.add_state("dtp_started", 0.0)  # 1 once kappa holds a KPI

    def coefficients(self, losses: tf.Tensor, training: bool) -> tf.Tensor:
        fixed = tf.constant(self.fixed, tf.float32)
        if not training:
            return fixed
        eps, alpha = self.config.eps, self.config.alpha
        kpi = tf.exp(-tf.stop_gradient(losses))
        averaged = tf.where(self.started > 0, alpha * kpi + (1.0 - alpha) * self.kappa, kpi)
        kappa = tf.clip_by_value(averaged, eps, 1.0 - eps)
        self.kappa.assign(kappa)
        self.started.assign(1.0)
        return fixed * -((1.0 - kappa) ** self.config.gamma) * tf.math.log(kappa)
