"""FAMO: task weights that make the log-losses fall at the same rate, in O(1) extra time and space.

From "FAMO: Fast Adaptive Multitask Optimization" (Liu, Liang, Li and Zhang, NeurIPS 2023), as its
official implementation (github.com/Cranial-XIX/FAMO) and LibMTL run it. Task logits xi (start 0),
z = softmax(xi); the model's update direction is

    sum_k c_k grad L_k,   c_k = (z_k / L_k) / sum_i (z_i / L_i)

the gradient of sum_k z_k log L_k divided by sum_i z_i / L_i (the paper's normalization). After the
step, with delta_k the decrease of log L_k, the logits take one Adam step (learning rate 0.025,
betas 0.9 / 0.999, eps 1e-8, weight decay gamma added to the gradient as torch's Adam does) on

    grad_xi = J_softmax(xi)^T delta + gamma * xi,   (J^T delta)_j = z_j (delta_j - sum_i z_i delta_i)

so a task whose loss fell more than the z-weighted average loses logit (weight), one that fell less
gains. The paper writes this step as plain gradient descent; the official code, LibMTL and we use
Adam. gamma = 0.001 (LibMTL's default; the official code's is 0.01). The losses' floor (the official
`min_losses`) is 0, and 1e-8 is added before dividing or taking logs.

What we chose where the paper does not fit: the paper recomputes the losses on the same batch after
the step; a Keras training step sees one batch, so delta compares consecutive steps' batch losses
(log L at step t-1 minus log L at step t), and the logits are updated at the start of step t, before
c is computed from them. The first training step has no previous losses: no logit update. With the
tasks' fixed weights w, c_k = w_k z_k / L_k / sum_i (z_i / L_i) (the gradient of sum_k w_k z_k log L_k,
the same scale). c is a constant of the step (no gradient flows through z_k / L_k). Validation
(`training=False`) weights by w alone and leaves the state as it is.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ranker.balancing.base import Balancer, StrategyConfig
from ranker.balancing.registry import register
from ranker.keras_compat import tf

_EPS = 1e-8
_BETA_1, _BETA_2 = 0.9, 0.999  # Adam's, as the official code uses them


class FAMOConfig(StrategyConfig):
    learning_rate: float = Field(0.025, gt=0)  # of the task logits (the paper's beta)
    weight_decay: float = Field(0.001, ge=0)  # on the task logits (the paper's gamma)


@register("famo")
class FAMO(Balancer):
    """c = w * z / L, normalized, z = softmax(xi), xi following the log-losses' decrease."""

    Config: ClassVar[type[StrategyConfig]] = FAMOConfig
    config: FAMOConfig

    def create_state(self) -> None:
        zeros = [0.0] * self.num_tasks
        self.logits = self.add_state("famo_logits", zeros)  # xi
        self.previous = self.add_state("famo_previous_log_losses", zeros)
        self.first_moment = self.add_state("famo_adam_m", zeros)
        self.second_moment = self.add_state("famo_adam_v", zeros)
        self.adam_steps = self.add_state("famo_adam_steps", 0.0)
        self.started = self.add_state("famo_started", 0.0)  # 1 once `previous` holds losses

    def coefficients(self, losses: tf.Tensor, training: bool) -> tf.Tensor:
        fixed = tf.constant(self.fixed, tf.float32)
        if not training:
            return fixed
        losses = tf.stop_gradient(losses) + _EPS
        log_losses = tf.math.log(losses)
        logits = self._update_logits(self.previous - log_losses)
        self.previous.assign(log_losses)
        self.started.assign(1.0)
        z = tf.nn.softmax(logits)
        return fixed * (z / losses) / tf.reduce_sum(z / losses)

    def _update_logits(self, delta: tf.Tensor) -> tf.Tensor:
        """The logits after one Adam step on J_softmax^T delta + gamma * xi (module docstring);
        unchanged at the first step (no previous losses). Selected with `tf.where`, not `tf.cond`:
        the state is assigned in a replica's step, which a cond branch cannot do (MirroredStrategy)."""
        xi = tf.convert_to_tensor(self.logits)
        z = tf.nn.softmax(xi)
        gradient = z * (delta - tf.reduce_sum(z * delta)) + self.config.weight_decay * xi
        t = self.adam_steps + 1.0
        m = _BETA_1 * self.first_moment + (1.0 - _BETA_1) * gradient
        v = _BETA_2 * self.second_moment + (1.0 - _BETA_2) * tf.square(gradient)
        m_hat, v_hat = m / (1.0 - _BETA_1**t), v / (1.0 - _BETA_2**t)
        stepped = xi - self.config.learning_rate * m_hat / (tf.sqrt(v_hat) + _EPS)
        started = self.started > 0
        self.first_moment.assign(tf.where(started, m, self.first_moment))
        self.second_moment.assign(tf.where(started, v, self.second_moment))
        self.adam_steps.assign(tf.where(started, t, self.adam_steps))
        updated = tf.where(started, stepped, xi)
        self.logits.assign(updated)
        return updated
