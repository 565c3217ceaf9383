"""Task balancing: how the objectives' losses and gradients become one training update.

Chosen in the training config, as a name or a mapping with the strategy's hyperparameters::

    loss_weighting: uncertainty
    loss_weighting: {name: cagrad, c: 0.4}

One module per strategy, registered by name (`registry.names()`); what they share, and which
parameters count as shared, is in `ranker.balancing.base`.
"""

from ranker.balancing.base import Balancer, StrategyConfig
from ranker.balancing.registry import build, get, names, parse, register

__all__ = ["Balancer", "StrategyConfig", "build", "get", "names", "parse", "register"]
