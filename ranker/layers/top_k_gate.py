"""The noisy top-k gate of sparsely gated mixtures of experts, with a load-balancing loss.

From "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer" (Shazeer
et al., ICLR 2017): H(x) = x W_g + N(0, 1) * softplus(x W_noise) while training (x W_g at
inference, so an export is deterministic), G(x) = softmax(KeepTopK(H(x), k)): every example is
routed to its k best experts, the others get weight exactly 0. W_g and W_noise start at zero, as
in the paper (the noise breaks the ties at first).

The load-balancing loss is the auxiliary loss of "Switch Transformers" (Fedus et al., JMLR 2022),
for k experts an example: weight * E * sum_e f_e P_e, with f_e the share of the batch's k
assignments that went to expert e and P_e the mean router probability softmax(x W_g)_e; it is
`weight` when routing is uniform and grows as it concentrates (only P carries gradient).
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf


@keras.utils.register_keras_serializable(package="mtrank")
class NoisyTopKGate(keras.layers.Layer):
    """[B, D] -> [B, E] weights with exactly k non-zero entries a row (ties aside), rows summing
    to 1; the balance loss added with `add_loss`. Computed in float32, as `Gate`."""

    def __init__(
        self,
        num_experts: int,
        k: int = 2,
        noise: bool = True,
        balance_weight: float = 0.01,
        kernel_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"NoisyTopKGate num_experts must be >= 1, got {num_experts}")
        if not 1 <= k <= num_experts:
            raise ValueError(f"NoisyTopKGate k must be in [1, num_experts={num_experts}], got {k}")
        if not balance_weight >= 0:
            raise ValueError(f"NoisyTopKGate balance_weight must be >= 0, got {balance_weight}")
        self.num_experts = int(num_experts)
        self.k = int(k)
        self.noise = bool(noise)
        self.balance_weight = float(balance_weight)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.logits = self._dense("logits")
        self.noise_scale = self._dense("noise_scale") if self.noise else None

    def _dense(self, name: str) -> keras.layers.Dense:
        return keras.layers.Dense(
            self.num_experts,
            use_bias=False,
            # a fresh initializer each: one instance would give both kernels the same values
            kernel_initializer=keras.initializers.deserialize(
                keras.initializers.serialize(self.kernel_initializer)
            ),
            dtype="float32",
            name=name,
        )

    def build(self, input_shape: Any) -> None:
        shape = tf.TensorShape([None, int(input_shape[-1])])
        self.logits.build(shape)
        if self.noise_scale is not None:  # used in training only: built for the export too
            self.noise_scale.build(shape)
        super().build(input_shape)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        clean = self.logits(x)
        logits = clean
        if training and self.noise_scale is not None:
            scale = tf.nn.softplus(self.noise_scale(x))
            logits = clean + tf.random.normal(tf.shape(clean)) * scale
        chosen = tf.math.top_k(logits, self.k).indices  # [B, k]
        mask = tf.reduce_sum(tf.one_hot(chosen, self.num_experts), axis=1)  # [B, E] of 0/1
        weights = tf.nn.softmax(tf.where(mask > 0, logits, tf.fill(tf.shape(logits), -1e9)))
        if self.balance_weight:
            self.add_loss(self.balance_loss(clean, mask))
        return weights * mask  # exactly 0 off the top k (softmax of -1e9 underflows anyway)

    def balance_loss(self, clean_logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """weight * E * sum_e f_e P_e (module docstring)."""
        share = tf.stop_gradient(tf.reduce_mean(mask, axis=0) / float(self.k))
        probability = tf.reduce_mean(tf.nn.softmax(clean_logits), axis=0)
        return self.balance_weight * self.num_experts * tf.reduce_sum(share * probability)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "k": self.k,
            "noise": self.noise,
            "balance_weight": self.balance_weight,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
