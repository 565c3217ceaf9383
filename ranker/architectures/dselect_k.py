"""DSelect-k: MMoE whose task gates each select at most k of the shared experts, differentiably.

From "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to Multi-Task
Learning" (Hazimeh et al., NeurIPS 2021): the multi-gate mixture of experts of their MTL
experiments, with the per-example DSelect-k gate (`ranker.layers.gates.DSelectKGate`) in place
of MMoE's softmax. The same model as `mmoe` with `gate: dselect_k`; here `gate:` defaults to
DSelect-k and a mapping may leave the kind out (`gate: {k: 2, gamma: 1.0, entropy_weight: 0.0}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from ranker.architectures.mmoe import MMoE, MMoEConfig
from ranker.layers.gates import DSelectKGateConfig, GateConfig
from ranker.layers.mlp import MLP
from ranker.registry import register


class DSelectKConfig(MMoEConfig):
    gate: GateConfig = Field(default_factory=DSelectKGateConfig)

    @field_validator("gate", mode="before")
    @classmethod
    def _dselect_k_unless_named(cls, value: Any) -> Any:
        return {"kind": "dselect_k", **value} if isinstance(value, Mapping) else value


@register("dselect_k")
class DSelectK(MMoE):
    """MMoE with one DSelect-k gate per task."""

    Config = DSelectKConfig

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        num_experts: int,
        gate: GateConfig | dict[str, Any] | str = "dselect_k",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, expert, num_experts, gate=gate, **kwargs)
