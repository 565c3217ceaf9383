"""How per-objective losses combine into the training loss: small strategies, chosen by config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ranker.keras_compat import keras, tf


@keras.utils.register_keras_serializable(package="mtrank")
class FixedWeights(keras.layers.Layer):
    """sum_k w_k * L_k with fixed weights (the schema's task weights, or the config's)."""

    def __init__(self, weights: Mapping[str, float], **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # losses stay float32 under mixed precision
        super().__init__(**kwargs)
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad:
            raise ValueError(f"FixedWeights weights must be >= 0, got {bad}")
        self.loss_weights = dict(weights)

    def call(self, losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return tf.add_n([self.loss_weights.get(k, 1.0) * v for k, v in losses.items()])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weights": self.loss_weights}


@keras.utils.register_keras_serializable(package="mtrank")
class UncertaintyWeights(keras.layers.Layer):
    """sum_k exp(-s_k) * L_k + s_k with learned log-variances s_k.

    From "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics"
    (Kendall, Gal and Cipolla, CVPR 2018).
    """

    def __init__(self, names: list[str], **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # losses stay float32 under mixed precision
        super().__init__(**kwargs)
        if not names:
            raise ValueError("UncertaintyWeights needs at least one loss name, got []")
        self.names = list(names)
        self.log_vars = {
            name: self.add_weight(
                name=f"{name}_log_var", shape=(), initializer="zeros", trainable=True
            )
            for name in self.names
        }

    def call(self, losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return tf.add_n(
            [tf.exp(-self.log_vars[k]) * v + self.log_vars[k] for k, v in losses.items()]
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "names": self.names}
