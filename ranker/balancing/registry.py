"""One registry of balancing strategies by name: `@register("pcgrad")` on a Balancer subclass.

The training config names a strategy as a string (`loss_weighting: pcgrad`) or a mapping with its
hyperparameters (`loss_weighting: {name: cagrad, c: 0.4}`); `parse` checks either against the
strategy's typed `Config` (unknown keys are errors naming the key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ranker.config_files import describe_validation_error
from ranker.errors import ConfigError
from ranker.named import NamedClasses

if TYPE_CHECKING:
    from ranker.balancing.base import Balancer, StrategyConfig

# The modules that hold the registered strategies, imported on first lookup.
STRATEGIES: NamedClasses[type[Balancer]] = NamedClasses(
    "balancing strategy",
    "ranker.balancing",
    (
        "fixed",
        "uncertainty",
        # loss weighting
        "random_weights",
        "dwa",
        "dtp",
        "famo",
        "gradnorm",
        # gradient surgery
        "pcgrad",
        "mgda",
        "cagrad",
        "db_mtl",
    ),
    unknown="loss_weighting: unknown strategy",
)
register = STRATEGIES.register
get = STRATEGIES.get
names = STRATEGIES.names


def parse(spec: str | Mapping[str, Any]) -> tuple[type[Balancer], StrategyConfig]:
    """The strategy class and its checked config from `loss_weighting`'s string or mapping."""
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise ConfigError(
            f"loss_weighting: expected a strategy name or a mapping with 'name', got {spec!r}"
        )
    cls = get(name)
    try:
        return cls, cls.Config.model_validate(params)
    except ValidationError as err:
        raise ConfigError(
            f"loss_weighting ({name}): {describe_validation_error(err, params)}"
        ) from None


def build(
    spec: str | Mapping[str, Any], outputs: Sequence[str], weights: Mapping[str, float]
) -> Balancer:
    """The strategy `spec` names, over the objectives `outputs` with their fixed `weights`."""
    cls, config = parse(spec)
    return cls(outputs, weights, config, name="balancing")
