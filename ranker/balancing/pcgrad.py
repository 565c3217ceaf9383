"""PCGrad: each task's gradient projected off the other tasks' gradients it conflicts with.

From "Gradient Surgery for Multi-Task Learning" (Yu, Kumar, Gupta, Levine, Hausman and Finn,
NeurIPS 2020). Every step, for each task i, with the other tasks j in a random order:

    g_i^PC <- g_i^PC - (g_i^PC . g_j / ||g_j||^2) g_j     whenever g_i^PC . g_j < 0,

each projection against task j's ORIGINAL gradient g_j (not its projected one), starting from
g_i^PC = g_i; the update is sum_i g_i^PC. The gradients are those of the shared dense parameters
(`gradients = "shared"`).

Every projection adds a multiple of some g_j, so g_i^PC = sum_j C_ij g_j: the strategy tracks the
coefficient matrix C [T, T] on the Gram matrix K = G G^T (dot products only, no [T, P] copies) and
returns c_j = sum_i C_ij. The surgery acts on the weighted gradients w_k g_k (C starts as
diag(w)); projecting off w_j g_j is projecting off g_j, so the weights only scale each task's own
share, and with no conflict c = w, fixed weights' step. A task whose weighted gradient is zero
(weight 0, or no observed rows in the batch) conflicts with nothing.

The order is drawn with `tf.random.shuffle` per task and step (seeded by the global TensorFlow
seed); with two tasks it does not matter (each task has one other task to be projected off).
"""

from __future__ import annotations

from typing import ClassVar

from ranker.balancing.base import Balancer, Gradients
from ranker.balancing.registry import register
from ranker.keras_compat import tf


@register("pcgrad")
class PCGrad(Balancer):
    """c = the column sums of the projections' coefficient matrix (module docstring)."""

    gradients: ClassVar[Gradients] = "shared"

    def combine(self, gradients: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        tasks = self.num_tasks
        weights = tf.constant(self.fixed, tf.float32)
        gram = tf.matmul(gradients, gradients, transpose_b=True)  # K_ij = g_i . g_j
        squared = tf.linalg.diag_part(gram)
        conflicting = (weights > 0.0) & (squared > 0.0)  # a zero gradient conflicts with none
        rows = []
        for i in range(tasks):
            row = weights * tf.one_hot(i, tasks)  # g_i^PC = w_i g_i, as coefficients over g
            order = tf.random.shuffle(tf.range(tasks))
            for position in range(tasks):
                j = order[position]
                dot = tf.reduce_sum(row * tf.gather(gram, j, axis=1))  # g_i^PC . g_j
                project = (j != i) & tf.gather(conflicting, j) & (dot < 0.0)
                step = tf.where(project, dot / tf.maximum(tf.gather(squared, j), 1e-30), 0.0)
                row = row - step * tf.one_hot(j, tasks)
            rows.append(row)
        return tf.add_n(rows)
