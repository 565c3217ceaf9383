"""NDDR network: a column of layers per task, the tasks' features fused by an NDDR layer after each.

From "NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by Neural Discriminative
Dimensionality Reduction" (Gao et al., CVPR 2019), on MLP columns instead of CNN stages: after
column layer l, task k's features become NDDR_k,l(concat of every task's layer-l features)
(`ranker.layers.nddr.NDDR`). The paper puts an NDDR layer after every stage, the last included,
before the task heads: here after every column layer, the towers reading the last one's outputs.

Defaults are the paper's and its code's: initial weights 0.9 on the task's own features and 0.1
on the others', batch norm on. Unlike the paper's fine-tuning of pretrained single-task networks,
the NDDR weights here learn at the optimizer's rate (the paper scales theirs up, to move them away
from their initialisation while the pretrained layers barely move).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone, run_columns, task_columns
from ranker.keras_compat import tf
from ranker.layers.nddr import NDDR
from ranker.registry import register


class NDDRConfig(ArchitectureConfig):
    units: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    self_weight: float = Field(default=0.9, ge=0.0)
    # the weight on the other tasks' features, spread evenly over them
    others_weight: float = Field(default=0.1, ge=0.0)
    batch_norm: bool = True


@register("nddr")
class NDDRNetwork(Backbone):
    """Per layer l: h_k = column_k,l(h_k) for every task k, then h = NDDR_l(h).

    With self_weight 1, others_weight 0, no batch norm and the ReLU activation, the network starts
    as the T separate columns: the NDDR layers then compute relu(h_k), and h_k >= 0 already.
    """

    Config = NDDRConfig

    def __init__(
        self,
        num_tasks: int,
        units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        self_weight: float = 0.9,
        others_weight: float = 0.1,
        batch_norm: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if not units:
            raise ValueError(f"NDDRNetwork units must have at least one layer, got {units}")
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.self_weight = float(self_weight)
        self.others_weight = float(others_weight)
        self.batch_norm = bool(batch_norm)
        self.columns = task_columns(num_tasks, self.units, activation, self.dropout)
        self.fusions = [
            NDDR(
                num_tasks,
                self_weight=self_weight,
                others_weight=others_weight,
                batch_norm=batch_norm,
                activation=activation,
                name=f"nddr_{i}",
            )
            for i in range(len(self.units))
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> NDDRNetwork:
        return cls(
            num_tasks,
            hp.units,
            activation=hp.activation,
            dropout=hp.dropout,
            self_weight=hp.self_weight,
            others_weight=hp.others_weight,
            batch_norm=hp.batch_norm,
        )

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        return run_columns(self.columns, self.fusions, x, training), {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
            "self_weight": self.self_weight,
            "others_weight": self.others_weight,
            "batch_norm": self.batch_norm,
        }
