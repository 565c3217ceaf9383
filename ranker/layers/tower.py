"""A task tower: an MLP and one output unit, squashed for binary tasks, identity for regression."""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP

_TASK_TYPES = ("binary", "regression")


@keras.utils.register_keras_serializable(package="mtrank")
class Tower(keras.layers.Layer):
    """[B, D] -> [B] score: sigmoid(w . MLP(x) + b) for binary tasks, w . MLP(x) + b for regression.

    The output unit runs in float32 so scores keep full precision under mixed precision.
    """

    def __init__(
        self,
        hidden: MLP | dict[str, Any] | None = None,
        task_type: str = "binary",
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if task_type not in _TASK_TYPES:
            raise ValueError(f"Tower task_type must be one of {_TASK_TYPES}, got {task_type!r}")
        if hidden is None:
            hidden = MLP(units=[])
        self.hidden: MLP = keras.layers.deserialize(hidden) if isinstance(hidden, dict) else hidden
        self.task_type = task_type
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.out = keras.layers.Dense(
            1,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype="float32",
            name="out",
        )

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        z = tf.squeeze(self.out(self.hidden(x, training=training)), axis=-1)
        return tf.sigmoid(z) if self.task_type == "binary" else z

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden": keras.layers.serialize(self.hidden),
            "task_type": self.task_type,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.utils.register_keras_serializable(package="mtrank")
class ScoreProduct(keras.layers.Layer):
    """The product of task scores, e.g. P(click and conversion) = P(click) * P(conversion | click).

    From "Entire Space Multi-Task Model" (Ma et al., SIGIR 2018). Since each factor is in [0, 1],
    the product never exceeds any of its factors.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # scores stay float32 under mixed precision
        super().__init__(**kwargs)

    def call(self, scores: list[tf.Tensor]) -> tf.Tensor:
        if len(scores) < 2:
            raise ValueError(f"ScoreProduct needs at least 2 scores, got {len(scores)}")
        result = scores[0]
        for score in scores[1:]:
            result = result * score
        return result
