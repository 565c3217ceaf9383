"""Random loss weighting (RLW): fresh random task weights at every training step.

From "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning" (Lin, Ye,
Xu, Shi and Zhang, TMLR 2022). Each training step draws z ~ N(0, 1)^T and weights the losses by

    c_k = w_k * T * softmax(z)_k

so the random weights (before the fixed weights w) are positive and sum to the task count T: on
average each task gets weight w_k, as with `fixed`. The paper's recommended (and LibMTL's default)
distribution is the standard normal through a softmax; the other distributions it compares are not
offered here. The T scaling keeps the loss on the scale of the plain sum (the paper normalizes to 1).

Validation (`training=False`) weights the losses by w alone, so the validation loss is the same
objective every epoch. Under MirroredStrategy each replica draws its own z (a stateful random op);
the applied update sums the replicas' randomly weighted gradients, and `effective` logs their mean.
"""

from __future__ import annotations

from ranker.balancing.base import Balancer
from ranker.balancing.registry import register
from ranker.keras_compat import tf


@register("random_weights")
class RandomWeights(Balancer):
    """c = w * T * softmax(z), z ~ N(0, 1)^T drawn each training step; w when not training."""

    def coefficients(self, losses: tf.Tensor, training: bool) -> tf.Tensor:
        fixed = tf.constant(self.fixed, tf.float32)
        if not training:
            return fixed
        z = tf.random.normal([self.num_tasks])
        return fixed * float(self.num_tasks) * tf.nn.softmax(z)
