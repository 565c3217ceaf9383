"""MMoE: shared experts, one softmax gate per task.

From "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts"
(Ma et al., KDD 2018). Task k's representation is sum_e g_k(x)[e] * expert_e(x). The gates are
softmax gates by default; `gate: dselect_k` makes them DSelect-k gates (`ranker.layers.gates`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import tf
from ranker.layers.experts import ExpertSet, mix
from ranker.layers.gates import GateConfig, SoftmaxGateConfig, gate_config, make_gate
from ranker.layers.mlp import MLP
from ranker.registry import register


class MMoEConfig(ArchitectureConfig):
    num_experts: int = Field(default=4, ge=1)
    expert_units: list[int] = Field(default_factory=lambda: [64], min_length=1)
    gate: GateConfig = Field(default_factory=SoftmaxGateConfig)


@register("mmoe")
class MMoE(Backbone):
    """Experts shared by all tasks; each task mixes them with its own gate."""

    Config = MMoEConfig
    num_gates_per_model: int | None = None  # None: one gate per task

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        num_experts: int,
        gate: GateConfig | dict[str, Any] | str = "softmax",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        self.experts = ExpertSet(expert, num_experts, name="experts")
        self.gate_config = gate_config(gate)
        gates = self.num_gates_per_model or num_tasks
        self.gates = [make_gate(self.gate_config, num_experts, f"gate_{k}") for k in range(gates)]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> MMoE:
        expert = hp.mlp(hp.expert_units, name="expert")
        return cls(num_tasks, expert=expert, num_experts=hp.num_experts, gate=hp.gate)

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        experts = self.experts(x, training=training)
        weights = [gate(x) for gate in self.gates]
        per_task = [weights[min(k, len(weights) - 1)] for k in range(self.num_tasks)]
        return [mix(experts, w) for w in per_task], {f"task{k}": w for k, w in enumerate(per_task)}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": self.experts.expert_config,
            "num_experts": self.experts.num_experts,
            "gate": self.gate_config.model_dump(),
        }
