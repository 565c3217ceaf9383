"""AdaTT: fusion levels of per-task experts, every task fusing all tasks' experts plus its own.

From "AdaTT: Adaptive Task-to-Task Fusion Network for Multitask Learning in Recommendations"
(Li et al., KDD 2023). At each level, task k's unit outputs the softmax-gated sum of all experts of
the level (gate from task k's input) plus a learned linear combination of task k's own experts;
that output is task k's input at the next level. With `shared_experts` > 0 (the paper's general
AdaTT) a shared module's experts join every gate, and non-final levels also emit a shared output.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone, run_levels
from ranker.keras_compat import tf
from ranker.layers.adatt import AdaTTLevel
from ranker.layers.mlp import MLP
from ranker.registry import register


class AdaTTConfig(ArchitectureConfig):
    levels: int = Field(default=2, ge=1)
    specific_experts: int = Field(default=2, ge=1)
    # 0 is AdaTT-sp, the paper's main variant (and the reference implementation's default)
    shared_experts: int = Field(default=0, ge=0)
    expert_units: list[int] = Field(default_factory=lambda: [64], min_length=1)


@register("adatt")
class AdaTT(Backbone):
    """`levels` AdaTTLevel layers, each task's output the next level's input for that task."""

    Config = AdaTTConfig

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        levels: int,
        specific_experts: int,
        shared_experts: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if levels < 1:
            raise ValueError(f"AdaTT levels must be >= 1, got {levels}")
        self.levels = [
            AdaTTLevel(
                num_tasks,
                expert,
                specific_experts,
                shared_experts,
                emit_shared=bool(shared_experts) and level < levels - 1,
                name=f"level_{level}",
            )
            for level in range(levels)
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> AdaTT:
        expert = hp.mlp(hp.expert_units, name="expert")
        return cls(num_tasks, expert, hp.levels, hp.specific_experts, hp.shared_experts)

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        return run_levels(self.levels, [x] * self.levels[0].num_inputs, self.num_tasks, training)

    def get_config(self) -> dict[str, Any]:
        first = self.levels[0]
        return {
            **super().get_config(),
            "expert": first.expert_config,
            "levels": len(self.levels),
            "specific_experts": first.specific_experts,
            "shared_experts": first.shared_experts,
        }
