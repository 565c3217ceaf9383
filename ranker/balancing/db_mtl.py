"""DB-MTL: log-transformed losses, each task's gradient scaled to the largest task's magnitude.

From "Dual-Balancing for Multi-Task Learning" (Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang and
Kwok; arXiv:2308.12029, 2023; accepted by Neural Networks). Two balancings:

- loss scale: train on log L_k, whose gradient is g_k / L_k (+1e-8 as LibMTL);
- gradient magnitude: keep an exponential moving average m_k of each task's log-gradient and
  scale every task to the largest, alpha_k = max_j ||m_j|| / ||m_k||, with
  m_k <- beta_t m_k + (1 - beta_t) grad log L_k and beta_t = beta / t^beta_sigma at step t
  (LibMTL's `DB_beta`, `DB_beta_sigma`, whose defaults 0.9 and 0 are these; 0 gives a plain EMA).

The gradients are those of the shared dense parameters (`gradients = "shared"`). The paper
updates with sum_k alpha_k m_k, the averaged gradients themselves; a strategy here chooses
coefficients of the CURRENT batch's gradients (the strategy's variables are created before the
number of shared parameters is known, too), so this keeps the EMA of the log-gradients' NORMS,
m_k = EMA of ||g_k|| / L_k, for the magnitudes only, and takes the direction from the batch:

    c_k = w_k * (max_j m_j / m_k) / L_k   (L_k: see the guards below),

each task's log-gradient scaled by the EMA ratio to the largest one's magnitude, then by its
fixed weight (the log transform would otherwise cancel the weights: grad log(w L) = g / L). The
EMA of norms is at least the norm of the EMA (batch noise does not average out in it), so a noisy
task gets a little less weight than in the paper. Tasks with weight 0 do not set the largest
magnitude; a task whose gradient has always been zero gets coefficient 0.

Two guards the paper does not need (its losses never approach 0, and its update is the averaged
gradient itself): the log transform divides by the task's running loss scale (an EMA of L_k with
the same beta, the first batch's loss at the start), not by the batch's loss, and the ratio is
capped at `max_ratio` (10). A task with no gradient in a batch (no observed rows: a CVR batch
without clicks) gets coefficient 0 and leaves its averages as they are. Without the guards, on
`mtrank synth` (400k rows, MMoE, the README quality config) batches whose few clicks the model
already fitted had CVR losses near 0, coefficients of 1e5 to 1e13 (they also scale the
embeddings' gradients, `ranker.balancing.base`) and the CVR head died (CVR AUC 0.50).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ranker.balancing.base import Balancer, Gradients, StrategyConfig
from ranker.balancing.registry import register
from ranker.keras_compat import tf

EPSILON = 1e-8  # LibMTL's: log(L + 1e-8)


class DBMTLConfig(StrategyConfig):
    beta: float = Field(0.9, ge=0.0, lt=1.0)
    beta_sigma: float = Field(0.0, ge=0.0)
    # the largest magnitude ratio max_j m_j / m_k a task gets (see the module docstring)
    max_ratio: float = Field(10.0, ge=1.0)


@register("db_mtl")
class DBMTL(Balancer):
    """c_k = w_k * min(max_j m_j / m_k, max_ratio) / Lbar_k (module docstring)."""

    Config: ClassVar[type[StrategyConfig]] = DBMTLConfig
    config: DBMTLConfig
    gradients: ClassVar[Gradients] = "shared"

    def create_state(self) -> None:
        self.step = self.add_state("step", 0.0)
        self.norms = self.add_state("norms", [0.0] * self.num_tasks)  # m_k
        self.scales = self.add_state("loss_scales", [1.0] * self.num_tasks)  # EMA of L_k

    def combine(self, gradients: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        weights = tf.constant(self.fixed, tf.float32)
        norms = tf.norm(gradients, axis=1)
        seen = norms > 0.0  # a task with no observed rows in the batch has no gradient
        step = self.step + 1.0
        beta = self.config.beta / step**self.config.beta_sigma
        first = tf.equal(step, 1.0)
        scales = tf.where(
            seen,
            tf.where(first, losses, beta * self.scales + (1.0 - beta) * losses),
            self.scales,
        )
        scale = scales + EPSILON  # d log(L + eps) = g / (L + eps), L at its running scale
        average = tf.where(seen, beta * self.norms + (1.0 - beta) * norms / scale, self.norms)
        self.step.assign(step)
        self.scales.assign(scales)
        self.norms.assign(average)
        largest = tf.reduce_max(tf.where(weights > 0.0, average, 0.0))
        ratio = tf.where(average > 0.0, largest / tf.maximum(average, 1e-30), 0.0)
        capped = tf.minimum(ratio, self.config.max_ratio)
        return tf.where(seen, weights * capped / scale, 0.0)
