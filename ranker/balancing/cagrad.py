"""CAGrad: the update that best serves the worst-off task within a ball around the mean gradient.

From "Conflict-Averse Gradient Descent for Multi-task Learning" (Liu, Liu, Jin, Stone and Liu,
NeurIPS 2021). With g0 the mean of the task gradients and phi = c^2 ||g0||^2, CAGrad solves

    max_d min_k <g_k, d>   subject to   ||d - g0||^2 <= phi

through its dual over the simplex, as the official code does:

    x = argmin_{x in simplex} <g_x, g0> + sqrt(phi) ||g_x||,   g_x = sum_k x_k g_k,

then d = g0 + (sqrt(phi) / ||g_x||) g_x, divided by 1 + c^2 (`rescale = 1`, the official code's
default; 0: not divided, 2: by 1 + c). The gradients are those of the shared dense parameters
(`gradients = "shared"`), and c_k = (1 / T + x_k sqrt(phi) / ||g_x||) / rescale are the
coefficients that give d. c = 0 gives the mean gradient.

The official code solves the dual with scipy's SLSQP; in the graph this is pairwise Frank-Wolfe on
the Gram matrix (at most `iterations` steps, stopping once the objective's gradient is as low on
the support as anywhere): each step moves weight from the support's worst vertex to the best one,
by the exact minimiser on that segment, where the objective is p + q t + sqrt(phi) sqrt(a t^2 +
2 b t + r) (closed form). With two tasks the first step is the exact solution; the tests check it
against a fine grid over the simplex.

Fixed weights: the surgery acts on w_k g_k (g0 is their mean, T-times smaller than the fixed
weights' sum), and c is multiplied by w. Tasks with weight 0 or a zero gradient (no observed rows
in the batch) count in g0 but are left out of the worst case (a zero gradient would otherwise make
the min over tasks 0 for every d).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ranker.balancing.base import Balancer, Gradients, StrategyConfig
from ranker.balancing.registry import register
from ranker.keras_compat import tf

TINY = 1e-30
STOP = 1e-6  # relative gap between the best vertex and the worst in the support: converged


class CAGradConfig(StrategyConfig):
    c: float = Field(0.5, ge=0.0)  # the radius of the ball around g0, in units of ||g0||
    rescale: Literal[0, 1, 2] = 1
    iterations: int = Field(20, ge=1)


@register("cagrad")
class CAGrad(Balancer):
    """c_k = w_k (1 / T + x_k sqrt(phi) / ||g_x||) / rescale (module docstring)."""

    Config: ClassVar[type[StrategyConfig]] = CAGradConfig
    config: CAGradConfig
    gradients: ClassVar[Gradients] = "shared"

    def combine(self, gradients: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        weights = tf.constant(self.fixed, tf.float32)
        gram = tf.matmul(gradients, gradients, transpose_b=True) * (
            weights[:, None] * weights[None, :]
        )  # of the weighted gradients w_k g_k
        diagonal = tf.linalg.diag_part(gram)
        gram = gram / tf.maximum(tf.reduce_max(diagonal), TINY)  # x, c do not depend on the scale
        active = (weights > 0.0) & (diagonal > 0.0)
        mean = tf.fill([self.num_tasks], 1.0 / self.num_tasks)
        linear = tf.linalg.matvec(gram, mean)  # <g_k, g0>
        radius = self.config.c * tf.sqrt(tf.maximum(tf.reduce_sum(mean * linear), 0.0))  # sqrt(phi)
        x = self.dual(gram, linear, radius, active)
        norm = tf.sqrt(tf.maximum(tf.reduce_sum(x * tf.linalg.matvec(gram, x)), 0.0))
        lam = tf.where(norm > 1e-12, radius / tf.maximum(norm, TINY), 0.0)
        divisor = {0: 1.0, 1: 1.0 + self.config.c**2, 2: 1.0 + self.config.c}[self.config.rescale]
        return weights * (mean + lam * x) / divisor

    def dual(
        self, gram: tf.Tensor, linear: tf.Tensor, radius: tf.Tensor, active: tf.Tensor
    ) -> tf.Tensor:
        """x in the simplex (zero outside `active`) minimising x . linear + radius sqrt(x^T gram
        x), by pairwise Frank-Wolfe with exact line search (module docstring)."""
        tasks = self.num_tasks
        ones = tf.cast(active, tf.float32)
        start = ones / tf.maximum(tf.reduce_sum(ones), 1.0)

        def step(
            i: tf.Tensor, x: tf.Tensor, gap: tf.Tensor
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            product = tf.linalg.matvec(gram, x)  # <g_k, g_x>
            squared = tf.reduce_sum(x * product)  # ||g_x||^2
            slope = linear + radius * product / tf.sqrt(tf.maximum(squared, TINY))
            best = tf.argmin(tf.where(active, slope, float("inf")), output_type=tf.int32)
            worst = tf.argmax(
                tf.where(active & (x > 0.0), slope, -float("inf")), output_type=tf.int32
            )
            gap = (slope[worst] - slope[best]) / tf.maximum(tf.reduce_max(tf.abs(slope)), TINY)
            t = self.line_search(
                q=linear[best] - linear[worst],
                a=gram[best, best] + gram[worst, worst] - 2.0 * gram[best, worst],
                b=product[best] - product[worst],
                r=squared,
                radius=radius,
                longest=x[worst],
            )
            t = tf.where(gap > STOP, t, 0.0)
            return i + 1, x + t * (tf.one_hot(best, tasks) - tf.one_hot(worst, tasks)), gap

        def unfinished(i: tf.Tensor, x: tf.Tensor, gap: tf.Tensor) -> tf.Tensor:
            return (i < self.config.iterations) & (gap > STOP)

        _, x, _ = tf.while_loop(unfinished, step, (tf.constant(0), start, tf.constant(1.0)))
        return x

    @staticmethod
    def line_search(
        q: tf.Tensor,
        a: tf.Tensor,
        b: tf.Tensor,
        r: tf.Tensor,
        radius: tf.Tensor,
        longest: tf.Tensor,
    ) -> tf.Tensor:
        """t in [0, longest] minimising q t + radius sqrt(a t^2 + 2 b t + r) (a convex function:
        its slope q + radius a s / sqrt(a s^2 + k), s = t + b / a, k = r - b^2 / a, rises from
        q - radius sqrt(a) to q + radius sqrt(a))."""
        root = tf.sqrt(tf.maximum(a, 0.0))
        target = -q / tf.maximum(radius, TINY)  # where a s / sqrt(a s^2 + k) = target
        flat = a <= 1e-12  # the segment keeps ||g_x|| (b = 0 too): the linear part decides
        k = tf.maximum(r - b * b / tf.maximum(a, TINY), 0.0)
        inside = target * tf.sqrt(k / tf.maximum(a * (a - target * target), TINY))
        t = tf.where(
            target >= root,
            longest,
            tf.where(target <= -root, 0.0, inside - b / tf.maximum(a, TINY)),
        )
        t = tf.where(flat, tf.where(q < 0.0, longest, 0.0), t)
        return tf.clip_by_value(t, 0.0, longest)
