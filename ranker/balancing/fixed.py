"""Fixed weights: sum_k w_k L_k with the schema's task weights (or the config's `task_weights`)."""

from __future__ import annotations

from ranker.balancing.base import Balancer
from ranker.balancing.registry import register


@register("fixed")
class FixedWeights(Balancer):
    """The base strategy as it is: c = w, the tasks' fixed weights, every step."""
