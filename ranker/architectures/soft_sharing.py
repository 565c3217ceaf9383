"""Soft parameter sharing: one network per task, the corresponding layers' weights pulled together.

From "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing in a Neural Network Parser"
(Duong et al., ACL 2015), the "soft parameter sharing" of Ruder's "An Overview of Multi-Task
Learning in Deep Neural Networks" (arXiv 2017). Every task k has its own column, an MLP over the
shared input vector (the feature embeddings stay shared); nothing is shared in the forward pass.
Instead the training loss gets an L2 penalty between the columns' corresponding layers:

    penalty * sum_l sum_{a < b} (||W_l^a - W_l^b||^2 + ||b_l^a - b_l^b||^2)

Pairwise, as in the paper, which trains a source and a target language parser with an L2
penalty between their tied parameters (the hidden layer's weights and the POS and arc-label
embeddings, not the word embeddings): with two tasks it is the paper's term. With T tasks the
pairwise sum is T times the squared distance to the tasks' mean, sum_a ||W_l^a - mean_a W_l^a||^2,
so the choice between the two is only a scale: each column is pulled toward the mean with gradient
2 * penalty * T * (W_l^a - mean). Biases are tied too (the paper names none): then a penalty that
grows without bound forces identical columns, i.e. hard sharing (a shared bottom), and penalty 0
gives independent single-task networks.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import tf
from ranker.layers.experts import ExpertSet
from ranker.layers.mlp import MLP
from ranker.registry import register


class SoftSharingConfig(ArchitectureConfig):
    units: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    # the scale of the embedding L2 default (1e-3): with the default units on a ~128-wide input,
    # two Glorot-initialised columns start ~256 apart (4 * fan_in * fan_out / (fan_in + fan_out)
    # summed over the layers), a penalty of ~0.26 against a fresh binary cross-entropy of ~0.69, so
    # the pull is felt from the start without outweighing the tasks. Not tuned on our data: the
    # paper tunes its lambdas on held-out data, and so should a user (0 = separate networks).
    penalty: float = Field(default=1e-3, ge=0.0)


@register("soft_sharing")
class SoftSharing(Backbone):
    """Task k's representation is column_k(x); the L2 penalty between columns is a layer loss.

    The columns are an `ExpertSet` of `num_tasks` copies of `column` (expert k is task k's
    column). The penalty is registered with `add_loss` as a callable, like a Keras kernel
    regularizer: the model adds `losses` to its regularization loss, and Keras evaluates a
    callable loss with the variables read in float32, also under mixed precision (read inside
    `call`, they would come as float16 and the differences of nearly tied weights would round).
    """

    Config = SoftSharingConfig

    def __init__(
        self, num_tasks: int, column: MLP | dict[str, Any], penalty: float = 1e-3, **kwargs: Any
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if not penalty >= 0.0:  # also rejects NaN
            raise ValueError(f"SoftSharing penalty must be >= 0, got {penalty}")
        self.penalty = float(penalty)
        self.columns = ExpertSet(column, num_tasks, name="columns")

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> SoftSharing:
        return cls(num_tasks, column=hp.mlp(hp.units, name="column"), penalty=hp.penalty)

    def build(self, input_shape: Any) -> None:
        self.columns.build(input_shape)
        self.add_loss(self.sharing_penalty)
        super().build(input_shape)

    def sharing_penalty(self) -> tf.Tensor:
        """penalty * the sum over layers and task pairs of the squared distance between the
        columns' kernels and biases (0 with one task)."""
        return self.penalty * self.distance()

    def distance(self) -> tf.Tensor:
        """sum_l sum_{a<b} ||W_l^a - W_l^b||^2 + ||b_l^a - b_l^b||^2, in float32."""
        total = tf.constant(0.0)
        columns = self.columns.experts
        for layers in zip(*(column.dense_layers for column in columns), strict=True):
            for a, b in combinations(layers, 2):
                for va, vb in ((a.kernel, b.kernel), (a.bias, b.bias)):
                    difference = tf.cast(va, tf.float32) - tf.cast(vb, tf.float32)
                    total += tf.reduce_sum(tf.square(difference))
        return total

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        stacked = self.columns(x, training=training)  # [B, T, D]
        return tf.unstack(stacked, num=self.num_tasks, axis=1), {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "column": self.columns.expert_config,
            "penalty": self.penalty,
        }
