"""Mixture-of-experts parts: a set of expert networks, a softmax gate, and the weighted mix.

After "Adaptive Mixtures of Local Experts" (Jacobs et al., Neural Computation 1991) and its
multi-task form in "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts" (Ma et al., KDD 2018).
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP


def mix(experts: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Weighted sum of expert outputs: experts [B, E, D], weights [B, E] -> [B, D]."""
    weights = tf.cast(weights, experts.dtype)
    # a broadcast multiply and a sum: on CPU the einsum's gradient (two _MklEinsum) cost ~5 ms of
    # a 15 ms MMoE step at batch 1024 (a profile of benchmarks/peer_throughput.py's shapes)
    return tf.reduce_sum(experts * weights[:, :, tf.newaxis], axis=1)


@keras.utils.register_keras_serializable(package="mtrank")
class ExpertSet(keras.layers.Layer):
    """`num_experts` copies of the `expert` network (fresh weights each), stacked to [B, E, D]."""

    def __init__(self, expert: MLP | dict[str, Any], num_experts: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"ExpertSet num_experts must be >= 1, got {num_experts}")
        if isinstance(expert, dict):
            expert = keras.layers.deserialize(expert)
        if not isinstance(expert, MLP):
            raise ValueError(f"ExpertSet expert must be an MLP, got {type(expert).__name__}")
        if not expert.units:
            raise ValueError("ExpertSet expert must have at least one layer, got MLP(units=[])")
        self.expert = expert
        self.num_experts = int(num_experts)
        self.experts = [expert.clone(name=f"expert_{i}") for i in range(self.num_experts)]

    @property
    def output_dim(self) -> int:
        return self.expert.units[-1]

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return tf.stack([e(x, training=training) for e in self.experts], axis=1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": keras.layers.serialize(self.expert),
            "num_experts": self.num_experts,
        }


@keras.utils.register_keras_serializable(package="mtrank")
class Gate(keras.layers.Layer):
    """A softmax gate: weights over `num_experts` from the input, [B, D_in] -> [B, E], rows sum to 1.

    Computed in float32 even under mixed precision, so the weights sum to 1 to float32 accuracy.
    """

    def __init__(
        self,
        num_experts: int,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"Gate num_experts must be >= 1, got {num_experts}")
        self.num_experts = int(num_experts)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.logits = keras.layers.Dense(
            self.num_experts,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype="float32",
            name="logits",
        )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(self.logits(tf.cast(x, tf.float32)), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
