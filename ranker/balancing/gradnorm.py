"""GradNorm: learned task weights that equalize the tasks' gradient norms, scaled by training rates.

From "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks"
(Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018). With learned weights w, each task's gradient
g_k = grad L_k on the shared parameters, and the initial losses L(0):

    G_k = ||w_k g_k||,   r_k = (L_k / L_k(0)) / mean_i(L_i / L_i(0)),   target_k = mean(G) * r_k^alpha

and one gradient step (learning rate `learning_rate`) on sum_k |G_k - target_k| with the targets held
constant (the paper), i.e. w_k <- w_k - lr * sign(G_k - target_k) * ||g_k||: a task whose gradient
norm is above its target loses weight, one below gains. Then w is renormalized to its initial total.
c = the updated w. alpha = 1.5 (the paper's restoring force, its NYUv2 value; LibMTL's default).

What we chose where the paper does not fit:
- G is the norm of the task's gradient on ALL the shared dense parameters (the `shared` gradients,
  flattened), not only on the last shared layer's weights as in the paper: the framework hands the
  strategy the whole shared gradient, and the backbones here (MMoE, PLE, ...) have no single last
  shared layer.
- The initial weights are the tasks' fixed weights w0 (all 1: the paper's), renormalized after each
  update to sum(w0) (T when all 1, as in the paper). A task with fixed weight 0 keeps weight 0 and
  takes no part in mean(G) or mean(L / L(0)).
- L(0) is the loss of the first training batch (per replica under MirroredStrategy, averaged).
- w is floored at 1e-6 after the step, so a large step cannot make a weight negative.
- The weight step is plain gradient descent, as the paper writes; its gradient is computed in closed
  form (|G - target| is linear in w_k for w_k > 0) rather than by a second backward pass.
Validation uses the fixed weights (the base's `coefficients`).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ranker.balancing.base import Balancer, Gradients, StrategyConfig
from ranker.balancing.registry import register
from ranker.keras_compat import tf

_EPS = 1e-12


class GradNormConfig(StrategyConfig):
    alpha: float = Field(1.5, ge=0)  # the restoring force towards a common training rate
    learning_rate: float = Field(0.025, gt=0)  # of the task weights' gradient step


@register("gradnorm")
class GradNorm(Balancer):
    """c = w after one GradNorm step on the learned weights w (module docstring)."""

    Config: ClassVar[type[StrategyConfig]] = GradNormConfig
    gradients: ClassVar[Gradients] = "shared"
    config: GradNormConfig

    def create_state(self) -> None:
        self.learned = self.add_state("gradnorm_weights", self.fixed)
        self.initial_losses = self.add_state("gradnorm_initial_losses", [1.0] * self.num_tasks)
        self.started = self.add_state("gradnorm_started", 0.0)  # 1 once L(0) is recorded

    def combine(self, gradients: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        active = tf.constant([float(w > 0) for w in self.fixed], tf.float32)
        count = tf.maximum(tf.reduce_sum(active), 1.0)
        initial = tf.where(self.started > 0, self.initial_losses, losses)
        self.initial_losses.assign(initial)
        self.started.assign(1.0)

        w = self.learned
        norms = tf.norm(gradients, axis=1)  # ||g_k||
        grad_norms = w * norms  # G_k (w >= 0)
        ratios = losses / tf.maximum(initial, _EPS)  # L_k / L_k(0)
        relative = ratios / tf.maximum(tf.reduce_sum(active * ratios) / count, _EPS)
        target = tf.reduce_sum(active * grad_norms) / count * relative**self.config.alpha
        step = tf.sign(grad_norms - target) * norms  # d/dw_k sum_i |G_i - target_i|
        updated = tf.maximum(w - self.config.learning_rate * active * step, 1e-6) * active
        total = sum(self.fixed)
        updated = updated * (total / tf.maximum(tf.reduce_sum(updated), _EPS))
        self.learned.assign(updated)
        return updated
