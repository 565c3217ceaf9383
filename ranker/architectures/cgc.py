"""CGC: task-specific plus shared experts, each task gated over its own and the shared ones.

The single-level model of "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
Model for Personalized Recommendations" (Tang et al., RecSys 2020).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import tf
from ranker.layers.cgc import CGC
from ranker.layers.gates import GateConfig, SoftmaxGateConfig
from ranker.layers.mlp import MLP
from ranker.registry import register


class CGCConfig(ArchitectureConfig):
    specific_experts: int = Field(default=1, ge=0)
    shared_experts: int = Field(default=2, ge=0)
    expert_units: list[int] = Field(default_factory=lambda: [64], min_length=1)
    gate: GateConfig = Field(default_factory=SoftmaxGateConfig)


@register("cgc")
class CustomizedGateControl(Backbone):
    """One CGC level over the shared input."""

    Config = CGCConfig

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        specific_experts: int,
        shared_experts: int,
        gate: GateConfig | dict[str, Any] | str = "softmax",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        self.level = CGC(num_tasks, expert, specific_experts, shared_experts, gate=gate, name="cgc")

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> CustomizedGateControl:
        expert = hp.mlp(hp.expert_units, name="expert")
        return cls(num_tasks, expert, hp.specific_experts, hp.shared_experts, gate=hp.gate)

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        outputs, gates = self.level([x] * (self.num_tasks + 1), training=training)
        return outputs, {f"task{k}": g for k, g in enumerate(gates)}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": self.level.expert_config,
            "specific_experts": self.level.specific_experts,
            "shared_experts": self.level.shared_experts,
            "gate": self.level.gate_config.model_dump(),
        }
