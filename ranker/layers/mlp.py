"""A plain multi-layer perceptron: the unit experts, bottoms and towers are made of."""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf

_ACTIVATIONS = ("relu", "gelu", "swish", "tanh", "sigmoid", "linear", "elu", "selu")


@keras.utils.register_keras_serializable(package="mtrank")
class MLP(keras.layers.Layer):
    """Dense layers of `units`, each followed by `activation`, optional batch norm and dropout.

    `MLP(units=[])` is the identity, so a "no bottom" or "no tower hidden layer" needs no special case.
    """

    def __init__(
        self,
        units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        l2: float = 0.0,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        units = list(units)
        if any(int(u) <= 0 for u in units):
            raise ValueError(f"MLP units must all be > 0, got {units}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP dropout must be in [0, 1), got {dropout}")
        if l2 < 0:
            raise ValueError(f"MLP l2 must be >= 0, got {l2}")
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.l2 = float(l2)
        # Kept serialized: each Dense gets a fresh instance, since an unseeded initializer instance
        # returns the same values on every call (all experts would start identical).
        self.kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        self.bias_initializer = keras.initializers.serialize(
            keras.initializers.get(bias_initializer)
        )
        regularizer = keras.regularizers.l2(self.l2) if self.l2 else None
        self.dense_layers = [
            keras.layers.Dense(
                n,
                activation=None if self.batch_norm else activation,
                kernel_initializer=keras.initializers.deserialize(self.kernel_initializer),
                bias_initializer=keras.initializers.deserialize(self.bias_initializer),
                kernel_regularizer=regularizer,
                name=f"dense_{i}",
            )
            for i, n in enumerate(self.units)
        ]
        self.norm_layers = (
            [keras.layers.BatchNormalization(name=f"bn_{i}") for i in range(len(self.units))]
            if self.batch_norm
            else []
        )
        self.dropout_layers = (
            [keras.layers.Dropout(self.dropout) for _ in self.units] if self.dropout else []
        )

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        for i, dense in enumerate(self.dense_layers):
            x = dense(x)
            if self.batch_norm:
                x = self.norm_layers[i](x, training=training)
                x = keras.activations.get(self.activation)(x)
            if self.dropout:
                x = self.dropout_layers[i](x, training=training)
        return x

    def output_dim(self, input_dim: int) -> int:
        return self.units[-1] if self.units else input_dim

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "l2": self.l2,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }

    def clone(self, name: str) -> MLP:
        """A fresh, unbuilt MLP with the same configuration (how expert sets replicate a template)."""
        config = self.get_config()
        config["name"] = name
        return MLP.from_config(config)


def template_config(clone: MLP, name: str) -> dict[str, Any]:
    """The serialized template a layer cloned `clone` from, named `name` again.

    Layers that replicate a template MLP (expert sets, per-task networks) keep only the clones: a
    kept template is never called, so it stays unbuilt and every SavedModel export warned about
    it ("Skipping full serialization"). Their `get_config` rebuilds the template from a clone.
    """
    config: dict[str, Any] = keras.layers.serialize(clone)
    config["config"]["name"] = name
    return config
