"""Customized Gate Control: task-specific and shared experts, each task gated over its own + shared.

From "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations" (Tang et al., RecSys 2020). One CGC layer is the single-level model;
PLE stacks several, where every level but the last also emits a shared output gated over all experts.
Every gate is of the kind `gate` names (`ranker.layers.gates`): softmax by default.
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.experts import mix, task_and_shared_experts
from ranker.layers.gates import GateConfig, gate_config, make_gate
from ranker.layers.mlp import MLP


@keras.utils.register_keras_serializable(package="mtrank")
class CGC(keras.layers.Layer):
    """One extraction level with `num_tasks` specific expert sets and one shared expert set.

    Input: a list of `num_tasks + 1` tensors [B, D] (one per task, then the shared input); at the first
    level they are all the same vector. Output: a list of `num_tasks` tensors, plus the shared one when
    `emit_shared` (non-final PLE levels). Task k mixes only its own `specific_experts` experts and the
    `shared_experts` shared ones; the shared output mixes all experts.
    """

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        specific_experts: int = 1,
        shared_experts: int = 1,
        emit_shared: bool = False,
        gate: GateConfig | dict[str, Any] | str = "softmax",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"CGC num_tasks must be >= 1, got {num_tasks}")
        if specific_experts < 0 or shared_experts < 0 or specific_experts + shared_experts < 1:
            raise ValueError(
                "CGC needs specific_experts >= 0, shared_experts >= 0 and at least one expert, "
                f"got specific_experts={specific_experts}, shared_experts={shared_experts}"
            )
        if isinstance(expert, dict):
            expert = keras.layers.deserialize(expert)
        self.num_tasks = int(num_tasks)
        self.specific_experts = int(specific_experts)
        self.shared_experts = int(shared_experts)
        self.emit_shared = bool(emit_shared)
        self.gate_config = gate_config(gate)
        self.task_experts, self.shared = task_and_shared_experts(
            expert, self.num_tasks, specific_experts, shared_experts
        )
        self.task_gates = [
            make_gate(self.gate_config, specific_experts + shared_experts, f"task_{k}_gate")
            for k in range(self.num_tasks)
        ]
        total = self.num_tasks * specific_experts + shared_experts
        self.shared_gate = (
            make_gate(self.gate_config, total, "shared_gate") if emit_shared else None
        )

    def call(
        self, inputs: list[tf.Tensor], training: bool | None = None
    ) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """Returns (outputs, gate weights), gate weights in the same order as outputs."""
        if len(inputs) != self.num_tasks + 1:
            raise ValueError(f"CGC expects {self.num_tasks + 1} inputs, got {len(inputs)}")
        shared = [self.shared(inputs[-1], training=training)] if self.shared is not None else []
        specific = [
            experts(inputs[k], training=training) for k, experts in enumerate(self.task_experts)
        ]
        outputs, gates = [], []
        for k in range(self.num_tasks):
            own = [specific[k]] if specific else []
            candidates = tf.concat(own + shared, axis=1)
            weights = self.task_gates[k](inputs[k])
            outputs.append(mix(candidates, weights))
            gates.append(weights)
        if self.shared_gate is not None:
            candidates = tf.concat(specific + shared, axis=1)
            weights = self.shared_gate(inputs[-1])
            outputs.append(mix(candidates, weights))
            gates.append(weights)
        return outputs, gates

    @property
    def expert_config(self) -> dict[str, Any]:
        """The serialized template `expert` its expert sets were cloned from (none keeps it)."""
        return (self.shared or self.task_experts[0]).expert_config

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "expert": self.expert_config,
            "specific_experts": self.specific_experts,
            "shared_experts": self.shared_experts,
            "emit_shared": self.emit_shared,
            "gate": self.gate_config.model_dump(),
        }
