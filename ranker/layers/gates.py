"""Gates that weigh E experts per example, and the typed `gate:` option that picks one.

`softmax` is the gate of MMoE, CGC and PLE (`ranker.layers.experts.Gate`). `dselect_k` is the
sparse, differentiable gate of "DSelect-k: Differentiable Selection in the Mixture of Experts with
Applications to Multi-Task Learning" (Hazimeh et al., NeurIPS 2021), per-example form.
`noisy_top_k` routes each example to its k best experts (Shazeer et al., ICLR 2017;
`ranker.layers.top_k_gate`). A gated
architecture's config has `gate: softmax` (the default), `gate: dselect_k`, or the mapping form
`gate: {kind: dselect_k, k: 2, gamma: 1.0, entropy_weight: 0.0}`; one more kind of gate is one
more config class with a `kind` and a `make` method, added to `AnyGateConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.experts import Gate
from ranker.layers.top_k_gate import NoisyTopKGate

# keeps log(0) and 1/0 finite (the value of the reference implementation)
EPSILON = 1e-6


def smooth_step(t: tf.Tensor, gamma: float) -> tf.Tensor:
    """0 for t <= -gamma/2, 1 for t >= gamma/2, and -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2 between:
    a continuously differentiable step that reaches exactly 0 and 1 (from "The Tree Ensemble
    Layer", Hazimeh et al., ICML 2020; DSelect-k's binary variables go through it)."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return tf.where(
        t <= -gamma / 2, tf.zeros_like(t), tf.where(t >= gamma / 2, tf.ones_like(t), cubic)
    )


def binary_codes(num_experts: int) -> np.ndarray:
    """[E, m] with m = ceil(log2 E) (at least 1): row e is e's binary code, most significant bit
    first. Expert e is the one a selector picks when its m smooth steps read that code."""
    width = max(1, (num_experts - 1).bit_length())
    return np.array(
        [[float(bit) for bit in np.binary_repr(e, width=width)] for e in range(num_experts)],
        dtype=np.float32,
    )


@keras.utils.register_keras_serializable(package="mtrank")
class DSelectKGate(keras.layers.Layer):
    """DSelect-k's per-example gate: weights over `num_experts` from the input, [B, D] -> [B, E],
    non-zero on at most `k` experts once the selectors have converged, rows summing to 1.

    Each of the `k` selectors reads m = ceil(log2 E) logits z (a Dense layer of the input) through
    the smooth step S and gives expert e the weight prod_j (S(z_j) if bit j of e's code is 1 else
    1 - S(z_j)): a distribution over the 2^m codes that is one-hot as soon as every |z_j| >=
    gamma / 2. The gate is the selectors' mixture with softmax weights over the k selectors (a
    second Dense layer of the input). Computed in float32, as `Gate`.

    Losses added with `add_loss` (the model sums them into its regularization loss): the
    `entropy_weight` times the selectors' entropies (the paper's regularizer that drives the
    selectors to one-hot), and, when E is not a power of 2, the reference implementation's sum
    over selectors of 1 / (weight on the existing experts) - 1, which keeps the selectors off the
    codes that name no expert (0 once they are on existing experts). Both are means over the batch
    (the reference sums over it), so their strength does not depend on the batch size. The
    weights on existing experts are then rescaled to sum to 1, so a code past E never takes part
    (the reference leaves the row sum below 1 until the selectors converge).

    Initialization as in the reference implementation (google-research, dselect_k_moe): the code
    logits' kernel and bias uniform in +-gamma/100 (every selector starts near uniform), the
    selector logits' uniform in +-0.05.
    """

    def __init__(
        self,
        num_experts: int,
        k: int = 2,
        gamma: float = 1.0,
        entropy_weight: float = 0.0,
        code_initializer: Any = None,
        selector_initializer: Any = "random_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"DSelectKGate num_experts must be >= 1, got {num_experts}")
        if k < 1:
            raise ValueError(f"DSelectKGate k must be >= 1, got {k}")
        if not gamma > 0:
            raise ValueError(f"DSelectKGate gamma must be > 0, got {gamma}")
        if not entropy_weight >= 0:
            raise ValueError(f"DSelectKGate entropy_weight must be >= 0, got {entropy_weight}")
        self.num_experts = int(num_experts)
        self.k = int(k)
        self.gamma = float(gamma)
        self.entropy_weight = float(entropy_weight)
        if code_initializer is None:
            code_initializer = keras.initializers.RandomUniform(-gamma / 100, gamma / 100)
        # kept serialized: each use gets a fresh instance (an unseeded instance repeats its values)
        self.code_initializer = keras.initializers.serialize(
            keras.initializers.get(code_initializer)
        )
        self.selector_initializer = keras.initializers.serialize(
            keras.initializers.get(selector_initializer)
        )
        self.codes = binary_codes(self.num_experts)
        self.num_bits = self.codes.shape[1]
        self.complete = self.num_experts == 2**self.num_bits  # every code names an expert
        self.code_logits = self._dense(self.k * self.num_bits, self.code_initializer, "code_logits")
        self.selector_logits = self._dense(self.k, self.selector_initializer, "selector_logits")

    @staticmethod
    def _dense(units: int, initializer: dict[str, Any], name: str) -> keras.layers.Dense:
        return keras.layers.Dense(
            units,
            kernel_initializer=keras.initializers.deserialize(initializer),
            bias_initializer=keras.initializers.deserialize(initializer),
            dtype="float32",
            name=name,
        )

    def selectors(self, x: tf.Tensor) -> tf.Tensor:
        """Each selector's weights over the E existing experts' codes, [B, k, E] (each sums to 1
        when E is a power of 2, to at most 1 otherwise)."""
        z = tf.reshape(self.code_logits(x), [-1, self.k, 1, self.num_bits])
        bits = smooth_step(z, self.gamma)  # [B, k, 1, m]
        codes = tf.constant(self.codes)  # [E, m]
        return tf.reduce_prod(codes * bits + (1.0 - codes) * (1.0 - bits), axis=-1)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        selectors = self.selectors(x)  # [B, k, E]
        mixture = tf.nn.softmax(self.selector_logits(x), axis=-1)  # [B, k]
        weights = tf.reduce_sum(mixture[:, :, tf.newaxis] * selectors, axis=1)  # [B, E]
        if self.entropy_weight:
            entropy = -tf.reduce_sum(selectors * tf.math.log(selectors + EPSILON), axis=[1, 2])
            self.add_loss(self.entropy_weight * tf.reduce_mean(entropy))
        if self.complete:
            return weights
        reachable = tf.maximum(tf.reduce_sum(selectors, axis=-1), EPSILON)  # [B, k]
        self.add_loss(tf.reduce_mean(tf.reduce_sum(1.0 / reachable - 1.0, axis=-1)))
        return weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), EPSILON)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_weight": self.entropy_weight,
            "code_initializer": self.code_initializer,
            "selector_initializer": self.selector_initializer,
        }


class SoftmaxGateConfig(BaseModel):
    """The softmax gate of MMoE (Ma et al., KDD 2018): every expert a positive weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["softmax"] = "softmax"

    def make(self, num_experts: int, name: str) -> keras.layers.Layer:
        return Gate(num_experts, name=name)


class DSelectKGateConfig(BaseModel):
    """DSelect-k (Hazimeh et al., NeurIPS 2021): at most `k` experts per example once converged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["dselect_k"] = "dselect_k"
    # the reference implementation's example and PaddleRec's config select 2 experts
    k: int = Field(default=2, ge=1)
    # the reference implementation's default width of the smooth step's cubic part
    gamma: float = Field(default=1.0, gt=0.0)
    # off, as the reference implementation's default (no entropy regularizer): the smooth step
    # reaches 0 and 1 by itself; a weight speeds the selectors to one-hot
    entropy_weight: float = Field(default=0.0, ge=0.0)

    def make(self, num_experts: int, name: str) -> keras.layers.Layer:
        return DSelectKGate(
            num_experts, k=self.k, gamma=self.gamma, entropy_weight=self.entropy_weight, name=name
        )


class NoisyTopKGateConfig(BaseModel):
    """Sparsely gated experts (Shazeer et al., ICLR 2017): each example's k best experts, noisy
    logits in training, a load-balancing loss (`ranker.layers.top_k_gate`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["noisy_top_k"] = "noisy_top_k"
    # 2 of MMoE's default 4 experts; k = 1 is Switch routing
    k: int = Field(default=2, ge=1)
    noise: bool = True
    # Switch Transformers' alpha
    balance_weight: float = Field(default=0.01, ge=0.0)

    def make(self, num_experts: int, name: str) -> keras.layers.Layer:
        if self.k > num_experts:
            raise ConfigError(f"gate.k: {self.k} is more than the {num_experts} experts it gates")
        return NoisyTopKGate(
            num_experts, k=self.k, noise=self.noise, balance_weight=self.balance_weight, name=name
        )


# one more kind of gate: one more member here
AnyGateConfig = SoftmaxGateConfig | DSelectKGateConfig | NoisyTopKGateConfig
GATE_KINDS: tuple[str, ...] = tuple(
    kind.model_fields["kind"].default for kind in get_args(AnyGateConfig)
)


def _known_kind(value: Any) -> Any:
    """`dselect_k` is `{kind: dselect_k}`; an unknown or missing kind is an error that lists the
    known ones (the other keys depend on it)."""
    raw = {"kind": value} if isinstance(value, str) else value
    if isinstance(raw, Mapping) and raw.get("kind") not in GATE_KINDS:
        what = f"unknown gate {raw['kind']!r}" if "kind" in raw else "a gate needs a kind"
        raise ValueError(f"{what}; known: {', '.join(GATE_KINDS)}")
    return raw


GateConfig = Annotated[AnyGateConfig, Field(discriminator="kind"), BeforeValidator(_known_kind)]

_GATE_CONFIG: TypeAdapter[GateConfig] = TypeAdapter(GateConfig)


def gate_config(value: GateConfig | Mapping[str, Any] | str) -> GateConfig:
    """A gate config from itself, its name or its dict (what a layer's `get_config` holds)."""
    return _GATE_CONFIG.validate_python(value)


def make_gate(config: GateConfig, num_experts: int, name: str) -> keras.layers.Layer:
    """The gate layer `config` describes, over `num_experts` experts: [B, D] -> [B, E]."""
    return config.make(num_experts, name)
