"""Adaptive information transfer: how much of the previous task's information a task takes in.

From "Modeling the Sequential Dependence among Audience Multi-step Conversions with Multi-task
Learning in Targeted Display Advertising" (Xi et al., KDD 2021), the AIT module. Task t's own
representation q_t and the information transferred from task t-1, p_{t-1}, are pooled by a
self-attention over the two vectors u in {p_{t-1}, q_t}:

    w_u = softmax_u(<h2(u), h1(u)> / sqrt(d))        z_t = sum_u w_u h3(u)

with h1, h2, h3 linear projections to d dimensions (no bias, as in the authors' code: three
d x d matrices). A task whose own representation scores higher than the transferred one keeps
its own; a weight near 0 on p_{t-1} closes the transfer. Scores and weights are computed in
float32, also under mixed precision.
"""

from __future__ import annotations

import math
from typing import Any

from ranker.keras_compat import keras, tf


@keras.utils.register_keras_serializable(package="mtrank")
class AdaptiveInformationTransfer(keras.layers.Layer):
    """`layer([transferred p [B, D], own q [B, D]])` -> z [B, units] (see the module docstring).

    `layer.weights_of([p, q])` returns the attention weights [B, 2] (on p, then on q).
    """

    def __init__(
        self, units: int, kernel_initializer: Any = "glorot_uniform", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"AdaptiveInformationTransfer units must be >= 1, got {units}")
        self.units = int(units)
        # kept serialized: each projection gets a fresh instance (see MLP)
        self.kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        self.query, self.key, self.value = (
            keras.layers.Dense(
                self.units,
                use_bias=False,
                kernel_initializer=keras.initializers.deserialize(self.kernel_initializer),
                name=name,
            )
            for name in ("query", "key", "value")
        )

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        weights, values = self._attend(inputs)
        return tf.reduce_sum(values * tf.cast(weights, values.dtype)[:, :, tf.newaxis], axis=1)

    def weights_of(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        """The attention weights [B, 2] on the transferred and on the own representation."""
        return self._attend(inputs)[0]

    def _attend(self, inputs: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        if len(inputs) != 2:
            raise ValueError(
                f"AdaptiveInformationTransfer takes [transferred, own], got {len(inputs)} inputs"
            )
        stacked = tf.stack([tf.cast(x, self.compute_dtype) for x in inputs], axis=1)  # [B, 2, D]
        query, key = self.query(stacked), self.key(stacked)
        scores = tf.reduce_sum(tf.cast(query, tf.float32) * tf.cast(key, tf.float32), axis=-1)
        weights = tf.nn.softmax(scores / math.sqrt(self.units), axis=1)  # [B, 2]
        return weights, self.value(stacked)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_initializer": self.kernel_initializer,
        }
