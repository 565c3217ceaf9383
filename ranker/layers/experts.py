"""Mixture-of-experts parts: a set of expert networks, a softmax gate, and the weighted mix.

After "Adaptive Mixtures of Local Experts" (Jacobs et al., Neural Computation 1991) and its
multi-task form in "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts" (Ma et al., KDD 2018).
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP, template_config


def mix(experts: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Weighted sum of expert outputs: experts [B, E, D], weights [B, E] -> [B, D]."""
    weights = tf.cast(weights, experts.dtype)
    # a broadcast multiply and a sum: on CPU the einsum's gradient (two _MklEinsum) cost ~5 ms of
    # a 15 ms MMoE step at batch 1024 (a profile of benchmarks/peer_throughput.py's shapes)
    return tf.reduce_sum(experts * weights[:, :, tf.newaxis], axis=1)


@keras.utils.register_keras_serializable(package="mtrank")
class ExpertSet(keras.layers.Layer):
    """`num_experts` copies of the `expert` network (fresh weights each), stacked to [B, E, D].

    `expert` is a template: only its clones are kept (`ranker.layers.mlp.template_config`).
    """

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
        self.num_experts = int(num_experts)
        self.experts = [expert.clone(name=f"expert_{i}") for i in range(self.num_experts)]
        self._template_name = expert.name

    @property
    def template(self) -> MLP:
        """The first expert: every expert has the template's configuration."""
        return self.experts[0]

    @property
    def expert_config(self) -> dict[str, Any]:
        """The serialized template `expert` (what `ExpertSet(expert=...)` accepts)."""
        return template_config(self.template, self._template_name)

    @property
    def output_dim(self) -> int:
        return self.template.units[-1]

    def build(self, input_shape: Any) -> None:
        """Creates every expert's weights up front (`call` reads their first kernels directly)."""
        width = int(input_shape[-1])
        for expert in self.experts:
            for dense, fan_in in zip(expert.dense_layers, [width, *expert.units[:-1]], strict=True):
                dense.build(tf.TensorShape([None, fan_in]))
            for norm, units in zip(expert.norm_layers, expert.units, strict=False):
                norm.build(tf.TensorShape([None, units]))  # none without batch_norm
            for dropout, units in zip(expert.dropout_layers, expert.units, strict=False):
                # `call` drops the first layers' fused output with expert 0's dropout: the others'
                # first dropouts are never called, and an unbuilt layer warns in every export
                dropout.build(tf.TensorShape([None, units]))
            expert.built = True
        super().build(input_shape)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """[B, D] -> [B, E, D_out]. The experts' first layers run as one matmul over their
        concatenated kernels (the widest layer, on the whole input): one [D, E * H] product
        instead of E of [D, H], the same weights and gradients."""
        template = self.template
        if template.batch_norm:
            return tf.stack([e(x, training=training) for e in self.experts], axis=1)
        firsts = [expert.dense_layers[0] for expert in self.experts]
        kernel = tf.concat([dense.kernel for dense in firsts], axis=1)
        bias = tf.concat([dense.bias for dense in firsts], axis=0)
        hidden = keras.activations.get(template.activation)(
            tf.nn.bias_add(tf.matmul(x, kernel), bias)
        )
        hidden = tf.reshape(hidden, [-1, self.num_experts, template.units[0]])
        if template.dropout:
            hidden = self.experts[0].dropout_layers[0](hidden, training=training)
        if len(template.units) == 1:
            return hidden
        outputs = []
        for k, expert in enumerate(self.experts):
            y = hidden[:, k, :]
            for i in range(1, len(expert.units)):
                y = expert.dense_layers[i](y)
                if expert.dropout:
                    y = expert.dropout_layers[i](y, training=training)
            outputs.append(y)
        return tf.stack(outputs, axis=1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": self.expert_config,
            "num_experts": self.num_experts,
        }


def task_and_shared_experts(
    expert: MLP | dict[str, Any], num_tasks: int, specific_experts: int, shared_experts: int
) -> tuple[list[ExpertSet], ExpertSet | None]:
    """Each task's own expert set (`task_{k}_experts`; none when `specific_experts` is 0) and the
    shared one (`shared_experts`; None when `shared_experts` is 0): CGC's, AdaTT's and STEM's."""
    tasks = [
        ExpertSet(expert, specific_experts, name=f"task_{k}_experts")
        for k in range(num_tasks)
        if specific_experts
    ]
    shared = ExpertSet(expert, shared_experts, name="shared_experts") if shared_experts else None
    return tasks, shared


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
