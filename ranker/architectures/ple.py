"""PLE: several CGC extraction levels stacked, the shared path carried between levels.

From "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations" (Tang et al., RecSys 2020).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone, run_levels
from ranker.keras_compat import tf
from ranker.layers.cgc import CGC
from ranker.layers.gates import GateConfig, SoftmaxGateConfig
from ranker.layers.mlp import MLP
from ranker.registry import register


class PLEConfig(ArchitectureConfig):
    levels: int = Field(default=2, ge=1)
    specific_experts: int = Field(default=1, ge=0)
    shared_experts: int = Field(default=2, ge=0)
    expert_units: list[int] = Field(default_factory=lambda: [64], min_length=1)
    gate: GateConfig = Field(default_factory=SoftmaxGateConfig)


@register("ple")
class ProgressiveLayeredExtraction(Backbone):
    """`levels` CGC layers; each level but the last also emits a shared output for the next one."""

    Config = PLEConfig

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        levels: int,
        specific_experts: int,
        shared_experts: int,
        gate: GateConfig | dict[str, Any] | str = "softmax",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if levels < 1:
            raise ValueError(f"PLE levels must be >= 1, got {levels}")
        self.levels = [
            CGC(
                num_tasks,
                expert,
                specific_experts,
                shared_experts,
                emit_shared=level < levels - 1,
                gate=gate,
                name=f"level_{level}",
            )
            for level in range(levels)
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> ProgressiveLayeredExtraction:
        expert = hp.mlp(hp.expert_units, name="expert")
        return cls(
            num_tasks, expert, hp.levels, hp.specific_experts, hp.shared_experts, gate=hp.gate
        )

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        return run_levels(self.levels, [x] * (self.num_tasks + 1), self.num_tasks, training)

    def get_config(self) -> dict[str, Any]:
        first = self.levels[0]
        return {
            **super().get_config(),
            "expert": first.expert_config,
            "levels": len(self.levels),
            "specific_experts": first.specific_experts,
            "shared_experts": first.shared_experts,
            "gate": first.gate_config.model_dump(),
        }
