"""AdaTT fusion: per-task expert groups, each task's unit fusing all experts by a gate plus its own.

From "AdaTT: Adaptive Task-to-Task Fusion Network for Multitask Learning in Recommendations"
(Li et al., KDD 2023). A fusion unit's output is the gated fusion of every expert of the level (all
tasks', and the shared ones) plus a residual: a learned linear combination of the unit's own
(native) experts, or the native expert itself when there is only one (the paper's and reference
implementation's choice for a single native expert).
"""

from __future__ import annotations

import math
from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.experts import Gate, mix, task_and_shared_experts
from ranker.layers.mlp import MLP


@keras.utils.register_keras_serializable(package="mtrank")
class FusionUnit(keras.layers.Layer):
    """One task's (or the shared module's) fusion unit over a level's `total_experts` experts.

    Input: `(gate_input [B, D_in], experts [B, total_experts, D])`; the unit's native experts are
    `experts[:, native_start : native_start + native_experts]`. Output: `(fused [B, D], gate
    weights [B, total_experts])` with fused = sum_e g(x)[e] * expert_e + sum_j v[j] * native_j, g a
    softmax gate over all experts from the unit's own input, v learned (fixed to 1 when there is a
    single native expert). v starts uniform in +-sqrt(1 / native_experts), as in the reference
    implementation (facebookresearch/AdaTT), unless `residual_initializer` says otherwise.
    """

    def __init__(
        self,
        total_experts: int,
        native_start: int,
        native_experts: int,
        residual_initializer: Any = None,
        gate_kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if native_experts < 1:
            raise ValueError(f"FusionUnit native_experts must be >= 1, got {native_experts}")
        if native_start < 0 or native_start + native_experts > total_experts:
            raise ValueError(
                "FusionUnit native experts must lie within the level's experts, got "
                f"native_start={native_start}, native_experts={native_experts}, "
                f"total_experts={total_experts}"
            )
        self.total_experts = int(total_experts)
        self.native_start = int(native_start)
        self.native_experts = int(native_experts)
        if residual_initializer is None:
            scale = math.sqrt(1.0 / self.native_experts)
            residual_initializer = keras.initializers.RandomUniform(-scale, scale)
        self.residual_initializer = keras.initializers.get(residual_initializer)
        self.gate = Gate(
            self.total_experts, kernel_initializer=gate_kernel_initializer, name="gate"
        )
        self.residual_weights: tf.Variable | None = None

    def build(self, input_shape: Any) -> None:
        if self.native_experts > 1:
            self.residual_weights = self.add_weight(
                name="residual_weights",
                shape=(self.native_experts,),
                initializer=self.residual_initializer,
                trainable=True,
                dtype="float32",
            )
        super().build(input_shape)

    def residual(self, experts: tf.Tensor) -> tf.Tensor:
        """The linear combination of the native experts: [B, E, D] -> [B, D]."""
        native = experts[:, self.native_start : self.native_start + self.native_experts, :]
        if self.residual_weights is None:
            return native[:, 0, :]
        weights = tf.cast(self.residual_weights, native.dtype)
        return tf.reduce_sum(native * weights[tf.newaxis, :, tf.newaxis], axis=1)

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        gate_input, experts = inputs
        if experts.shape[1] != self.total_experts:
            raise ValueError(
                f"FusionUnit expects {self.total_experts} experts, got {experts.shape[1]}"
            )
        weights = self.gate(gate_input)
        return mix(experts, weights) + self.residual(experts), weights

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "total_experts": self.total_experts,
            "native_start": self.native_start,
            "native_experts": self.native_experts,
            "residual_initializer": keras.initializers.serialize(self.residual_initializer),
            "gate_kernel_initializer": keras.initializers.serialize(self.gate.kernel_initializer),
        }


@keras.utils.register_keras_serializable(package="mtrank")
class AdaTTLevel(keras.layers.Layer):
    """One fusion level: `specific_experts` experts per task, `shared_experts` shared ones.

    Input: a list of `num_tasks` tensors [B, D] (one per task), followed by the shared input when
    `shared_experts` > 0; at the first level they are all the same vector. Task k's experts read
    input k, the shared experts the shared input. Output: (a list of `num_tasks` fused tensors,
    plus the shared one when `emit_shared`; their gate weights [B, E_total] in the same order).
    Experts are ordered task 0's, ..., task T-1's, then the shared ones. `shared_experts=0` is
    AdaTT-sp, the paper's main variant.
    """

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        specific_experts: int = 1,
        shared_experts: int = 0,
        emit_shared: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"AdaTTLevel num_tasks must be >= 1, got {num_tasks}")
        if specific_experts < 1 or shared_experts < 0:
            raise ValueError(
                "AdaTTLevel needs specific_experts >= 1 and shared_experts >= 0, got "
                f"specific_experts={specific_experts}, shared_experts={shared_experts}"
            )
        if emit_shared and not shared_experts:
            raise ValueError("AdaTTLevel emit_shared=True needs shared_experts >= 1, got 0")
        if isinstance(expert, dict):
            expert = keras.layers.deserialize(expert)
        self.num_tasks = int(num_tasks)
        self.specific_experts = int(specific_experts)
        self.shared_experts = int(shared_experts)
        self.emit_shared = bool(emit_shared)
        self.task_experts, self.shared = task_and_shared_experts(
            expert, self.num_tasks, self.specific_experts, self.shared_experts
        )
        total = self.num_tasks * self.specific_experts + self.shared_experts
        self.task_units = [
            FusionUnit(total, k * self.specific_experts, self.specific_experts, name=f"task_{k}")
            for k in range(self.num_tasks)
        ]
        self.shared_unit = (
            FusionUnit(total, total - self.shared_experts, self.shared_experts, name="shared")
            if self.emit_shared
            else None
        )

    @property
    def num_inputs(self) -> int:
        return self.num_tasks + (1 if self.shared is not None else 0)

    def call(
        self, inputs: list[tf.Tensor], training: bool | None = None
    ) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        if len(inputs) != self.num_inputs:
            raise ValueError(f"AdaTTLevel expects {self.num_inputs} inputs, got {len(inputs)}")
        groups = [
            experts(inputs[k], training=training) for k, experts in enumerate(self.task_experts)
        ]
        if self.shared is not None:
            groups.append(self.shared(inputs[-1], training=training))
        experts = tf.concat(groups, axis=1)  # [B, E_total, D]
        units = [*self.task_units, *([self.shared_unit] if self.shared_unit is not None else [])]
        outputs, gates = [], []
        for i, unit in enumerate(units):
            fused, weights = unit((inputs[i], experts))
            outputs.append(fused)
            gates.append(weights)
        return outputs, gates

    @property
    def expert_config(self) -> dict[str, Any]:
        """The serialized template `expert` its expert sets were cloned from."""
        return self.task_experts[0].expert_config

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "expert": self.expert_config,
            "specific_experts": self.specific_experts,
            "shared_experts": self.shared_experts,
            "emit_shared": self.emit_shared,
        }
