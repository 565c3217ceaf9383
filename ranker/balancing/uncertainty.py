"""Uncertainty weighting: sum_k exp(-s_k) * w_k * L_k + s_k with learned log-variances s_k.

From "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics"
(Kendall, Gal and Cipolla, CVPR 2018). A task whose loss stays high (noisy labels, a hard task)
gets a larger s_k and so a smaller weight; the `+ s_k` term keeps s_k from growing without bound.
The fixed weights w scale each term as with `fixed` (all 1 unless the schema or config set them).
"""

from __future__ import annotations

from ranker.balancing.base import Balancer
from ranker.balancing.registry import register
from ranker.keras_compat import tf


@register("uncertainty")
class UncertaintyWeights(Balancer):
    """c_k = w_k * exp(-s_k), s_k trained with the model (initial 0: c = w)."""

    def create_state(self) -> None:
        self.log_vars = {
            name: self.add_weight(
                name=f"{name}_log_var", shape=(), initializer="zeros", trainable=True
            )
            for name in self.outputs
        }

    def _log_vars(self) -> tf.Tensor:
        return tf.stack([self.log_vars[name] for name in self.outputs])

    def coefficients(self, losses: tf.Tensor, training: bool) -> tf.Tensor:
        return tf.constant(self.fixed, tf.float32) * tf.exp(-self._log_vars())

    def regularizer(self) -> tf.Tensor:
        return tf.reduce_sum(self._log_vars())
