"""One registry of architectures by name: `@register("mmoe")` on a Backbone subclass."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from ranker.errors import ConfigError

if TYPE_CHECKING:
    from ranker.architectures.base import Backbone

B = TypeVar("B", bound="type[Backbone]")

_ARCHITECTURES: dict[str, type[Backbone]] = {}

# The modules that hold the registered architectures, imported on first lookup.
_MODULES = (
    "single_task",
    "shared_bottom",
    "omoe",
    "mmoe",
    "cgc",
    "ple",
    "esmm",
    "cross_stitch",
)


def register(name: str):  # type: ignore[no-untyped-def]
    """Registers a Backbone subclass under `name` and makes it Keras-serializable."""

    def decorate(cls: B) -> B:
        if name in _ARCHITECTURES:
            raise ValueError(
                f"architecture {name!r} is registered twice; known: {sorted(_ARCHITECTURES)}"
            )
        from ranker.keras_compat import keras

        cls.name_in_registry = name
        _ARCHITECTURES[name] = keras.utils.register_keras_serializable(package="mtrank")(cls)
        return cls

    return decorate


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"ranker.architectures.{module}")


def get(name: str) -> type[Backbone]:
    _load_all()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    """Every registered architecture, in a stable order (the built-in ones first)."""
    _load_all()
    builtin = [n for n in _MODULES if n in _ARCHITECTURES]
    return builtin + sorted(set(_ARCHITECTURES) - set(builtin))
