"""MTAN's task attention module: a soft, per-feature mask a task puts on a shared layer's output.

From "End-to-End Multi-Task Learning with Attention" (Liu, Johns and Davison, CVPR 2019). At block j
of the shared network, task i's mask is a_i(j) = h_i(j)([u(j); f(j)(â_i(j-1))]) (h_i(j)(u(j)) at the
first block) and its task-specific feature is â_i(j) = a_i(j) ⊙ p(j), where h is two 1x1
convolutions (batch norm and ReLU, then batch norm and sigmoid), f the shared 3x3 convolution that
carries the previous attended feature to this block's width, and u(j), p(j) the shared features of
the block's first and last layers. On vectors, a 1x1 convolution is a Dense layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ranker.keras_compat import keras, tf


@keras.utils.register_keras_serializable(package="mtrank")
class TaskAttention(keras.layers.Layer):
    """One task's attention module at one shared layer: input `shared` [B, D], or `(shared,
    previous)` with `previous` [B, D'] the task's feature carried from the layer before; output the
    attended feature mask * shared [B, D], where

        mask = sigmoid(Dense_D(relu(Dense_H([shared; previous])))) in (0, 1)^D.

    H is `hidden_units`, the shared layer's width D when None (the paper's 1x1 convolutions keep
    the block's channel count). The paper's batch norms inside the module are left out, as in this
    library's other MLPs (`MLP(batch_norm=False)` by default).
    """

    def __init__(
        self,
        hidden_units: int | None = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_units is not None and hidden_units < 1:
            raise ValueError(f"TaskAttention hidden_units must be >= 1 or None, got {hidden_units}")
        self.hidden_units = None if hidden_units is None else int(hidden_units)
        # kept serialized: each Dense gets a fresh instance (an unseeded instance repeats values)
        self.kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        self.bias_initializer = keras.initializers.serialize(
            keras.initializers.get(bias_initializer)
        )

    def build(self, input_shape: Any) -> None:
        shared_shape = input_shape[0] if isinstance(input_shape, list | tuple) else input_shape
        width = tf.TensorShape(shared_shape)[-1]
        if width is None:
            raise ValueError("TaskAttention needs the shared feature's width, got None")
        self.hidden = self._dense(self.hidden_units or int(width), "relu", "hidden")
        self.gate = self._dense(int(width), "sigmoid", "mask")
        super().build(input_shape)

    def _dense(self, units: int, activation: str, name: str) -> keras.layers.Dense:
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.deserialize(self.kernel_initializer),
            bias_initializer=keras.initializers.deserialize(self.bias_initializer),
            name=name,
        )

    def mask(self, inputs: tf.Tensor | Sequence[tf.Tensor]) -> tf.Tensor:
        """The attention mask [B, D] (the layer must be built: call it once first)."""
        shared, previous = _split(inputs)
        joined = shared if previous is None else tf.concat([shared, previous], axis=-1)
        return self.gate(self.hidden(joined))

    def call(self, inputs: tf.Tensor | Sequence[tf.Tensor]) -> tf.Tensor:
        shared, _ = _split(inputs)
        return self.mask(inputs) * shared

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }


def _split(inputs: tf.Tensor | Sequence[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(shared, previous or None) from `shared` or `(shared, previous)`."""
    if isinstance(inputs, list | tuple):
        if len(inputs) != 2:
            raise ValueError(
                f"TaskAttention expects shared or (shared, previous), got {len(inputs)} inputs"
            )
        return inputs[0], inputs[1]
    return inputs, None
