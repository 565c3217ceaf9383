"""Which model (and experiment variant) scores a request: the seam for A/B experiments.

`ModelRouter` is the default: the model the request names, else `default_model`, else the only
model, else the first by name; no experiments, so `variant` is None.

`ExperimentRouter` serves an experiments file (`serving.experiments`):

- `"model"` given: that model, outside any experiment (`variant` and `experiment` None);
- `"experiment"` given: that experiment (404 if unknown) assigns the variant by the salted hash
  of `user_id`;
- neither: the file's default experiment (its `default` key, else the first experiment);
- both: 422, the request must choose.

The route also carries the experiment's shadow models, which the exposure recorder scores after
the response (`serving.exposure`); they are never returned; and the variant's ranking policy
(`policy`, None when the variant names none), which `serving.ranking` applies unless the
request names its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from serving.errors import InvalidInput, NotFound
from serving.experiments import ExperimentsFile
from serving.manager import ModelManager
from serving.servable import Servable


@dataclass(frozen=True)
class Route:
    """The version that scores a request, and the experiment variant it belongs to (if any)."""

    servable: Servable
    variant: str | None = None
    experiment: str | None = None
    bucket: int | None = None
    shadows: tuple[Servable, ...] = ()
    policy: str | None = None  # the variant's ranking policy


class Router(Protocol):
    def route(self, *, user_id: str, model: str | None, experiment: str | None) -> Route:
        """Pick the servable; raise NotFound for an unknown model or experiment."""
        ...


class ModelRouter:
    """Routes by the requested model name only."""

    def __init__(self, manager: ModelManager, default_model: str | None = None) -> None:
        self.manager = manager
        self.default_model = default_model

    def route(self, *, user_id: str, model: str | None, experiment: str | None) -> Route:
        if experiment is not None:
            raise NotFound(f"unknown experiment {experiment!r}: no experiments are configured")
        name = model or self.default_model or self._first()
        return Route(serving_version(self.manager, name))

    def _first(self) -> str:
        names = self.manager.names
        if not names:
            raise NotFound("no model is loaded yet")
        return names[0]


class ExperimentRouter:
    """Assigns a variant by a salted hash of `user_id` unless the request names a model."""

    def __init__(self, manager: ModelManager, experiments: ExperimentsFile) -> None:
        self.manager = manager
        self.experiments = experiments

    def route(self, *, user_id: str, model: str | None, experiment: str | None) -> Route:
        if model is not None:
            if experiment is not None:
                raise InvalidInput(
                    ("body", "experiment"),
                    "give either 'model' (no experiment) or 'experiment', not both",
                )
            return Route(serving_version(self.manager, model))
        if experiment is None:
            chosen = self.experiments.default_experiment
        else:
            found = self.experiments.get(experiment)
            if found is None:
                known = [e.name for e in self.experiments.experiments]
                raise NotFound(f"unknown experiment {experiment!r} (experiments: {known})")
            chosen = found
        variant, bucket = chosen.assign(user_id)
        shadows = tuple(
            servable for name in chosen.shadow if (servable := self.manager.get(name)) is not None
        )
        return Route(
            serving_version(self.manager, variant.model),
            variant=variant.name,
            experiment=chosen.name,
            bucket=bucket,
            shadows=shadows,
            policy=variant.policy,
        )


def serving_version(manager: ModelManager, name: str, version: int | None = None) -> Servable:
    """The servable of `name` (and, if given, exactly `version`), or NotFound saying what serves."""
    servable = manager.get(name)
    if servable is None:
        known = manager.names
        raise NotFound(f"unknown model {name!r} (models: {known})")
    if version is not None and version != servable.version:
        raise NotFound(
            f"model {name!r} has no loaded version {version} (serving version {servable.version})"
        )
    return servable
