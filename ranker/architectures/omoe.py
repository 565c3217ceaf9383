"""OMoE: shared experts and ONE gate for all tasks (the one-gate ablation of MMoE).

From "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts"
(Ma et al., KDD 2018), where it is the "One-gate MoE" baseline.
"""

from __future__ import annotations

from ranker.architectures.mmoe import MMoE, MMoEConfig
from ranker.registry import register


@register("omoe")
class OMoE(MMoE):
    """MMoE with a single gate: every task reads the same mixture of experts."""

    Config = MMoEConfig
    num_gates_per_model = 1
