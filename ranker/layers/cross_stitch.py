"""Cross-stitch units: learned linear mixing of per-task hidden layers.

From "Cross-stitch Networks for Multi-task Learning" (Misra et al., CVPR 2016).
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf


@keras.utils.register_keras_serializable(package="mtrank")
class CrossStitch(keras.layers.Layer):
    """Mixes T task activations [B, D] with a learned T x T matrix: out_t = sum_s alpha[t, s] * x_s.

    alpha starts at `self_weight` on the diagonal and (1 - self_weight) / (T - 1) elsewhere, so each
    task starts mostly on its own column, as the paper recommends.
    """

    def __init__(self, num_tasks: int, self_weight: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"CrossStitch num_tasks must be >= 1, got {num_tasks}")
        if not 0.0 <= self_weight <= 1.0:
            raise ValueError(f"CrossStitch self_weight must be in [0, 1], got {self_weight}")
        self.num_tasks = int(num_tasks)
        self.self_weight = float(self_weight)

    def build(self, input_shape: Any) -> None:
        t = self.num_tasks
        other = (1.0 - self.self_weight) / (t - 1) if t > 1 else 0.0
        initial = [[self.self_weight if i == j else other for j in range(t)] for i in range(t)]
        if t == 1:
            initial = [[1.0]]
        self.alpha = self.add_weight(
            name="alpha",
            shape=(t, t),
            initializer=keras.initializers.Constant(initial),
            trainable=True,
            dtype="float32",
        )
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        if len(inputs) != self.num_tasks:
            raise ValueError(f"CrossStitch expects {self.num_tasks} inputs, got {len(inputs)}")
        stacked = tf.stack(inputs, axis=1)  # [B, T, D]
        mixed = tf.einsum("ts,bsd->btd", tf.cast(self.alpha, stacked.dtype), stacked)
        return tf.unstack(mixed, num=self.num_tasks, axis=1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "self_weight": self.self_weight,
        }
