"""Neural discriminative dimensionality reduction (NDDR): each task's features fused from all tasks'.

From "NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by Neural Discriminative
Dimensionality Reduction" (Gao et al., CVPR 2019). The T tasks' features of one layer are
concatenated along the channels, and each task reduces the T * D channels back to D with its own
1x1 convolution, followed by batch normalization and ReLU. On feature vectors a 1x1 convolution
is a dense layer over the concatenation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ranker.keras_compat import keras, tf


@keras.utils.register_keras_serializable(package="mtrank")
class NDDR(keras.layers.Layer):
    """T task features [B, D] -> T fused features [B, D]:

        out_k = activation(BN(concat(x_1, ..., x_T) @ W_k))        W_k: [T * D, D]

    (with `batch_norm=False`, a bias in place of the batch norm). W_k starts as the paper's
    diagonal blocks: `self_weight` * I on task k's own features and `others_weight` * I spread
    evenly over the other tasks' features, (others_weight / (T - 1)) * I each, so that a block row
    sums to self_weight + others_weight for any number of tasks; the paper's (0.9, 0.1), for two
    tasks, is that split. With one task the single block is (self_weight + others_weight) * I.
    The T reductions run as one [T * D, T * D] matmul (W_k are its column blocks), and one batch
    norm over the T * D outputs, which is a separate one per task since it normalizes each
    feature on its own.

    Batch norm momentum 0.95: the authors' 0.05 in PyTorch's convention.
    """

    def __init__(
        self,
        num_tasks: int,
        self_weight: float = 0.9,
        others_weight: float = 0.1,
        batch_norm: bool = True,
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"NDDR num_tasks must be >= 1, got {num_tasks}")
        if not self_weight >= 0.0:
            raise ValueError(f"NDDR self_weight must be >= 0, got {self_weight}")
        if not others_weight >= 0.0:
            raise ValueError(f"NDDR others_weight must be >= 0, got {others_weight}")
        try:
            keras.activations.get(activation)
        except ValueError:
            raise ValueError(
                f"NDDR activation must name a Keras activation, got {activation!r}"
            ) from None
        self.num_tasks = int(num_tasks)
        self.self_weight = float(self_weight)
        self.others_weight = float(others_weight)
        self.batch_norm = bool(batch_norm)
        self.activation = activation
        self.norm = (
            keras.layers.BatchNormalization(momentum=0.95, name="bn") if self.batch_norm else None
        )

    def mixing(self) -> np.ndarray:
        """The initial T x T block weights: entry [j, k] multiplies task j's features in task k's
        output."""
        t = self.num_tasks
        if t == 1:
            return np.array([[self.self_weight + self.others_weight]])
        other = self.others_weight / (t - 1)
        return np.where(np.eye(t, dtype=bool), self.self_weight, other)

    def _diagonal_blocks(self, shape: Any, dtype: Any = None) -> tf.Tensor:
        width = int(shape[0]) // self.num_tasks
        return tf.constant(np.kron(self.mixing(), np.eye(width)), dtype=dtype or tf.float32)

    def build(self, input_shape: Any) -> None:
        if len(input_shape) != self.num_tasks:
            raise ValueError(f"NDDR expects {self.num_tasks} inputs, got {len(input_shape)}")
        widths = {int(shape[-1]) for shape in input_shape}
        if len(widths) != 1:
            raise ValueError(f"NDDR inputs must have one width, got {sorted(widths)}")
        total = self.num_tasks * widths.pop()
        self.kernel = self.add_weight(
            name="kernel", shape=(total, total), initializer=self._diagonal_blocks, trainable=True
        )
        if self.norm is not None:
            self.norm.build(tf.TensorShape([None, total]))
            self.bias = None
        else:
            self.bias = self.add_weight(
                name="bias", shape=(total,), initializer="zeros", trainable=True
            )
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> list[tf.Tensor]:
        if len(inputs) != self.num_tasks:
            raise ValueError(f"NDDR expects {self.num_tasks} inputs, got {len(inputs)}")
        fused = tf.matmul(tf.concat(inputs, axis=-1), self.kernel)
        if self.norm is not None:
            fused = self.norm(fused, training=training)
        else:
            fused = tf.nn.bias_add(fused, self.bias)
        fused = keras.activations.get(self.activation)(fused)
        return tf.split(fused, self.num_tasks, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "self_weight": self.self_weight,
            "others_weight": self.others_weight,
            "batch_norm": self.batch_norm,
            "activation": self.activation,
        }
