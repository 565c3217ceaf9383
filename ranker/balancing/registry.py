"""One registry of balancing strategies by name: `@register("pcgrad")` on a Balancer subclass.

The training config names a strategy as a string (`loss_weighting: pcgrad`) or a mapping with its
hyperparameters (`loss_weighting: {name: cagrad, c: 0.4}`); `parse` checks either against the
strategy's typed `Config` (unknown keys are errors naming the key).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from ranker.config_files import describe_validation_error
from ranker.errors import ConfigError

if TYPE_CHECKING:
    from ranker.balancing.base import Balancer, StrategyConfig

B = TypeVar("B", bound="type[Balancer]")

_STRATEGIES: dict[str, type[Balancer]] = {}

# The modules that hold the registered strategies, imported on first lookup.
_MODULES = (
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
)


def register(name: str):  # type: ignore[no-untyped-def]
    """Registers a Balancer subclass under `name` and makes it Keras-serializable."""

    def decorate(cls: B) -> B:
        if name in _STRATEGIES:
            raise ValueError(
                f"balancing strategy {name!r} is registered twice; known: {sorted(_STRATEGIES)}"
            )
        from ranker.keras_compat import keras

        cls.name_in_registry = name
        _STRATEGIES[name] = keras.utils.register_keras_serializable(package="mtrank")(cls)
        return cls

    return decorate


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"ranker.balancing.{module}")


def get(name: str) -> type[Balancer]:
    _load_all()
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"loss_weighting: unknown strategy {name!r}; known: {', '.join(names())}"
        ) from None


def names() -> list[str]:
    """Every registered strategy, the built-in ones first."""
    _load_all()
    builtin = [n for n in _MODULES if n in _STRATEGIES]
    return builtin + sorted(set(_STRATEGIES) - set(builtin))


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
