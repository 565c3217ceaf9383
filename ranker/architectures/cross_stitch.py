"""Cross-stitch network: a column of layers per task, mixed by cross-stitch units after each layer.

From "Cross-stitch Networks for Multi-task Learning" (Misra et al., CVPR 2016).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone, run_columns, task_columns
from ranker.keras_compat import tf
from ranker.layers.cross_stitch import CrossStitch
from ranker.registry import register


class CrossStitchConfig(ArchitectureConfig):
    units: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    self_weight: float = Field(default=0.9, ge=0.0, le=1.0)


@register("cross_stitch")
class CrossStitchNetwork(Backbone):
    """Per layer l: h_k = dense_k,l(h_k) for every task k, then h = CrossStitch_l(h)."""

    Config = CrossStitchConfig

    def __init__(
        self,
        num_tasks: int,
        units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        self_weight: float = 0.9,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.self_weight = float(self_weight)
        self.columns = task_columns(num_tasks, self.units, activation, self.dropout)
        self.stitches = [
            CrossStitch(num_tasks, self_weight, name=f"stitch_{i}") for i in range(len(self.units))
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> CrossStitchNetwork:
        return cls(num_tasks, hp.units, hp.activation, hp.dropout, hp.self_weight)

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        return run_columns(self.columns, self.stitches, x, training), {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
            "self_weight": self.self_weight,
        }
