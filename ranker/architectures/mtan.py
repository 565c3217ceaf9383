"""MTAN: a shared network (the global feature pool) and, per task, an attention module per layer.

From "End-to-End Multi-Task Learning with Attention" (Liu, Johns and Davison, CVPR 2019), on MLP
layers. With p_l the shared network's layer l output, task k's feature at layer l is

    â_k,l = a_k,l ⊙ p_l,   a_k,l = sigmoid(Dense(relu(Dense([p_l; f_l-1(â_k,l-1)]))))

(a_k,1 from p_1 alone), where f_l-1 is a Dense layer shared by the tasks (the paper's shared
"attention block" convolution, `encoder_block_att` in the authors' code, lorenmt/mtan) that
carries the attended feature to layer l's width. Task k's representation is â_k,L, its attended
feature at the last layer. A paper block has two convolutions (the mask reads the first's output u,
masks the last's p); here a block is one Dense layer, so u and p are the same p_l.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import tf
from ranker.layers.mlp import MLP
from ranker.layers.mtan import TaskAttention
from ranker.registry import register


class MTANConfig(ArchitectureConfig):
    units: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    # the attention modules' hidden width; None: the layer's own width, as the paper's 1x1 convs
    attention_units: int | None = Field(default=None, ge=1)


@register("mtan")
class MTAN(Backbone):
    """Shared layers `shared_l`, task attention modules `attention[k][l]`, shared carriers
    `carriers[l]` from layer l's attended features to layer l + 1's width."""

    Config = MTANConfig

    def __init__(
        self,
        num_tasks: int,
        units: list[int],
        attention_units: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if not units or any(int(n) < 1 for n in units):
            raise ValueError(f"MTAN units must be a non-empty list of widths >= 1, got {units}")
        self.units = [int(n) for n in units]
        self.attention_units = None if attention_units is None else int(attention_units)
        self.activation = activation
        self.dropout = float(dropout)
        self.shared = [
            MLP([n], activation=activation, dropout=dropout, name=f"shared_{level}")
            for level, n in enumerate(self.units)
        ]
        self.attention = [
            [
                TaskAttention(self.attention_units, name=f"task_{k}_attention_{level}")
                for level in range(len(self.units))
            ]
            for k in range(num_tasks)
        ]
        self.carriers = [
            MLP([n], activation=activation, name=f"carrier_{level}")
            for level, n in enumerate(self.units[1:])
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> MTAN:
        return cls(num_tasks, hp.units, hp.attention_units, hp.activation, hp.dropout)

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        shared = x
        carried: list[tf.Tensor | None] = [None] * self.num_tasks
        for level, layer in enumerate(self.shared):
            shared = layer(shared, training=training)
            attended = [
                self.attention[k][level](shared if c is None else (shared, c))
                for k, c in enumerate(carried)
            ]
            if level < len(self.carriers):
                carrier = self.carriers[level]
                carried = [carrier(a, training=training) for a in attended]
        return attended, {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "attention_units": self.attention_units,
            "activation": self.activation,
            "dropout": self.dropout,
        }
