"""STEM-Net: shared and task-specific embeddings, mixed by All Forward Task-specific Backward gates.

From "STEM: Unleashing the Power of Embeddings for Multi-task Recommendation" (Su et al., AAAI
2024). The model embeds the features T + 1 times, each copy with its own tables: copy k is task
k's own embedding, copy T the shared one. Task k's specific experts read copy k, the shared experts
copy T; task k's gate mixes all of them, the other tasks' experts held constant in its backward
pass (`ranker.layers.stem.STEMExperts`), so task k's loss never updates another task's embedding
or experts, while every task still reads what the others learned.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import tf
from ranker.layers.mlp import MLP
from ranker.layers.stem import STEMExperts
from ranker.registry import register


class STEMConfig(ArchitectureConfig):
    # the authors' config (github.com/LiangcaiSu/STEM, config/model_config.yaml) has 1 specific
    # and 8 shared experts of [512, 512, 512]; smaller here, as for PLE, since the features are
    # embedded T + 1 times: with two tasks, 4 experts per gate, as MMoE's default
    specific_experts: int = Field(default=1, ge=1)
    shared_experts: int = Field(default=2, ge=1)
    expert_units: list[int] = Field(default_factory=lambda: [64], min_length=1)


@register("stem")
class STEMNet(Backbone):
    """Input: the T + 1 encodings (T tasks' own, then the shared one); task k's representation is
    its AFTB gate's mix of every task's specific experts and the shared experts."""

    Config = STEMConfig
    separate_inputs: ClassVar[bool] = True

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        specific_experts: int = 1,
        shared_experts: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        self.experts = STEMExperts(
            num_tasks, expert, specific_experts, shared_experts, name="stem_experts"
        )

    @classmethod
    def input_copies(cls, num_tasks: int) -> int:
        """One embedding per task and one shared."""
        return num_tasks + 1

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> STEMNet:
        expert = hp.mlp(hp.expert_units, name="expert")
        return cls(num_tasks, expert, hp.specific_experts, hp.shared_experts)

    def call_with_gates(
        self, x: list[tf.Tensor], training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        if len(x) != self.num_tasks + 1:
            raise ValueError(
                f"STEMNet expects {self.num_tasks + 1} inputs (one per task, then the shared "
                f"one), got {len(x)}"
            )
        representations, weights = self.experts(list(x), training=training)
        return representations, {f"task{k}": w for k, w in enumerate(weights)}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": self.experts.expert_config,
            "specific_experts": self.experts.specific_experts,
            "shared_experts": self.experts.shared_experts,
        }
