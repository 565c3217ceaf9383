"""A registry of classes by name, filled by a decorator and by importing the modules that hold them.

    ARCHITECTURES = NamedClasses("architecture", "ranker.architectures", ("mmoe", ...))
    @ARCHITECTURES.register("mmoe")
    class MMoE(Backbone): ...
    ARCHITECTURES.get("mmoe")

Both of mtrank's registries (`ranker.registry`: architectures; `ranker.balancing.registry`:
balancing strategies) are one of these: a registered class is Keras-serializable and knows its
name (`name_in_registry`); an unknown or duplicate name raises and lists the known ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from ranker.errors import ConfigError

C = TypeVar("C", bound=type)


class NamedClasses(Generic[C]):
    """Classes by name; `modules` (under `package`) hold the built-in ones, imported on first use."""

    def __init__(self, kind: str, package: str, modules: tuple[str, ...], unknown: str) -> None:
        self.kind, self.package, self.modules = kind, package, modules
        self.unknown = unknown  # the error's start, e.g. "unknown architecture"
        self._classes: dict[str, C] = {}

    def register(self, name: str) -> Callable[[C], C]:
        """Registers a class under `name` and makes it Keras-serializable."""

        def decorate(cls: C) -> C:
            if name in self._classes:
                raise ValueError(
                    f"{self.kind} {name!r} is registered twice; known: {sorted(self._classes)}"
                )
            from ranker.keras_compat import keras

            cls.name_in_registry = name  # type: ignore[attr-defined]
            self._classes[name] = keras.utils.register_keras_serializable(package="mtrank")(cls)
            return cls

        return decorate

    def _load_all(self) -> None:
        for module in self.modules:
            importlib.import_module(f"{self.package}.{module}")

    def get(self, name: str) -> C:
        self._load_all()
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(
                f"{self.unknown} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Every registered name, the built-in ones first (in `modules` order)."""
        self._load_all()
        builtin = [n for n in self.modules if n in self._classes]
        return builtin + sorted(set(self._classes) - set(builtin))
