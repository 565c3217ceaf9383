"""MGDA-UB: the task weights whose combined gradient is the min-norm point of the tasks' hull.

From "Multi-Task Learning as Multi-Objective Optimization" (Sener and Koltun, NeurIPS 2018). MGDA
finds the point of least norm in the convex hull of the task gradients,

    alpha = argmin_{alpha in simplex} || sum_k alpha_k g_k ||^2,

a common descent direction (or zero at a Pareto-stationary point), and trains on sum_k alpha_k L_k.
MGDA-UB, the paper's cheap upper bound, takes the gradients of the losses with respect to the
shared representation Z instead of the shared parameters (`gradients = "representation"`). Here Z
is the backbone's input vector (the embeddings and numeric features after the input layer and cross
layers, flattened over the batch, [T, B * D]): the one tensor every architecture's towers all read
from. MMoE's and PLE's experts are shared too, but each task mixes them with its own gate, so
after the backbone there is no single representation the tasks share.

The solver is the paper's Frank-Wolfe (its Algorithm 2) on the Gram matrix M = G G^T: from the
uniform alpha, move towards the vertex e_t with the least (M alpha)_t by the exact line search on
the segment, at most `iterations` times, stopping once alpha changes by less than 1e-5 (the paper's
code's criterion). With two tasks the first line search is the paper's analytic two-task solution
(clipped to [0, 1], where the paper's code clips to [0.001, 0.999]).

Gradient normalisation, as the paper's code (`normalization`, default "loss+" as there): task k's
gradient is divided by 1 ("none"), ||g_k|| ("l2"), L_k ("loss") or L_k ||g_k|| ("loss+") before the
min-norm problem only; the coefficients are then c_k = w_k alpha_k on the unnormalised losses,
exactly what the paper's code does (its `scale[t] = sol[t]` on the raw losses; LibMTL's parameter
mode divides by the normalisers instead, its representation mode does not). Dividing by L_k ||g_k||
here would multiply the learning rate by 1 / ||dL/dZ||, which is tiny for a batch mean.

Fixed weights: the hull is that of w_k g_k (normalised as above), and c_k = w_k alpha_k. Tasks with
weight 0 or a zero gradient (no observed rows in the batch) are left out of the hull, so a task
with nothing to say this batch does not stop the others (it would be a zero-norm vertex).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ranker.balancing.base import Balancer, Gradients, StrategyConfig
from ranker.balancing.registry import register
from ranker.keras_compat import tf

STOP = 1e-5  # the paper's code: alpha changed by less than this (L1) -> converged


class MGDAConfig(StrategyConfig):
    normalization: Literal["none", "l2", "loss", "loss+"] = "loss+"
    iterations: int = Field(250, ge=1)  # the paper's code's MAX_ITER


@register("mgda")
class MGDA(Balancer):
    """c = w * alpha, alpha the min-norm weights of the normalised representation gradients."""

    Config: ClassVar[type[StrategyConfig]] = MGDAConfig
    config: MGDAConfig
    gradients: ClassVar[Gradients] = "representation"

    def combine(self, gradients: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        weights = tf.constant(self.fixed, tf.float32)
        gram = tf.matmul(gradients, gradients, transpose_b=True)
        norms = tf.sqrt(tf.linalg.diag_part(gram))
        cosines = gram / tf.maximum(norms[:, None] * norms[None, :], 1e-30)
        divisor = {
            "none": tf.ones_like(losses),
            "l2": norms,
            "loss": losses,
            "loss+": losses * norms,
        }[self.config.normalization]
        # the hull of w_k g_k / divisor_k, through their lengths (relative to the longest) and
        # cosines, so that no product of a tiny divisor and a large gradient overflows
        lengths = weights * norms / tf.maximum(divisor, 1e-30)
        lengths = lengths / tf.maximum(tf.reduce_max(lengths), 1e-30)
        active = (weights > 0.0) & (norms > 0.0)
        alpha = self.min_norm(cosines * lengths[:, None] * lengths[None, :], active)
        return tf.where(tf.reduce_any(active), weights * alpha, weights)

    def min_norm(self, gram: tf.Tensor, active: tf.Tensor) -> tf.Tensor:
        """alpha in the simplex (zero outside `active`) minimising alpha^T gram alpha, by
        Frank-Wolfe with exact line search (module docstring)."""
        tasks = self.num_tasks
        ones = tf.cast(active, tf.float32)
        start = ones / tf.maximum(tf.reduce_sum(ones), 1.0)

        def step(
            i: tf.Tensor, alpha: tf.Tensor, change: tf.Tensor
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            product = tf.linalg.matvec(gram, alpha)  # M alpha
            t = tf.argmin(tf.where(active, product, float("inf")), output_type=tf.int32)
            uu = tf.reduce_sum(alpha * product)  # |u|^2, u = the current point
            uv = product[t]  # u . g_t
            vv = gram[t, t]
            denominator = uu + vv - 2.0 * uv  # |u - g_t|^2
            gamma = tf.where(
                denominator > 0.0,
                tf.clip_by_value((uu - uv) / tf.maximum(denominator, 1e-30), 0.0, 1.0),
                0.0,
            )
            new = (1.0 - gamma) * alpha + gamma * tf.one_hot(t, tasks)
            return i + 1, new, tf.reduce_sum(tf.abs(new - alpha))

        def unfinished(i: tf.Tensor, alpha: tf.Tensor, change: tf.Tensor) -> tf.Tensor:
            return (i < self.config.iterations) & (change >= STOP)

        _, alpha, _ = tf.while_loop(unfinished, step, (tf.constant(0), start, tf.constant(1.0)))
        return alpha
