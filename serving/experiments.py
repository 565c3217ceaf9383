"""The experiments file (`--experiments FILE`, CONTRACT section 5) and sticky variant assignment.

```yaml
experiments:
  - name: gates
    salt: gates-2026-11
    variants:
      - {name: control,   model: mmoe, weight: 50}
      - {name: treatment, model: ple,  weight: 50}
      # - {name: fusion, model: mmoe, policy: ctcvr_price, weight: ..}   (an extension)
    shadow: [cgc]          # optional: scored and logged, never returned
default: gates             # optional (an extension): the experiment of requests that name
                           # neither a model nor an experiment; the first one when left out
```

Bucketing is PlanOut's: `int(sha1(f"{salt}.{user_id}").hexdigest()[:15], 16) % 10000` gives the
user a bucket in [0, 10000), and the variants own consecutive ranges of buckets in file order,
`weight * 100` buckets each (weights are percentages that sum to 100; resolution 0.01). The same
user gets the same variant as long as the salt and the weights stay; a new salt reshuffles
everyone. Experiments are independent: each has its own salt, so a user's variants in two
experiments are unrelated.

A variant may name a ranking `policy` (serving.policies: a file policy, or a model output) beside
its model: two variants can share one model and differ only in how its scores are fused. A
request's own `"policy"` overrides the variant's (the client asked for it, as `"model"` takes a
request out of the experiment); the exposure records the policy that was applied, so such
requests stay visible in `mtrank ab-report`.

`ExperimentsFile.load(path)` validates the file on its own (YAML, keys, names, weights),
`check_models(loaded)` against the models that serve and `check_policies` the variants'
policies against the policies file and their models; every error is an `ExperimentsError`
naming the file and the key, e.g. `exp.yaml: experiments[0].variants: weights sum to 90, not
100 (experiment 'gates')`. Pure Python: no TensorFlow, no FastAPI.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ranker.config_files import describe_validation_error, read_yaml
from ranker.errors import MtrankError
from serving.policies import PolicySet, Scorer

BUCKETS = 10_000
_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$"


class ExperimentsError(MtrankError, ValueError):
    """The experiments file is invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """One arm: the model that serves it and its share of users in percent."""

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    model: str = Field(min_length=1, max_length=128)
    weight: float = Field(gt=0, le=100, description="percent of users; all variants sum to 100")
    policy: str | None = Field(
        default=None, min_length=1, max_length=64, description="ranking policy (an extension)"
    )


class Experiment(_Strict):
    """Variants sharing the users by a salted hash, plus shadow models scored on the side."""

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    salt: str = Field(min_length=1, max_length=256)
    variants: list[Variant] = Field(min_length=1)
    shadow: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [v.name for v in self.variants]
        duplicate = _first_duplicate(names)
        if duplicate is not None:
            raise ValueError(f"variants: duplicate variant name {duplicate!r}")
        total = sum(v.weight for v in self.variants)
        if abs(total - 100.0) > 1e-6:
            raise ValueError(f"variants: weights sum to {total:g}, not 100")
        duplicate = _first_duplicate(self.shadow)
        if duplicate is not None:
            raise ValueError(f"shadow: model {duplicate!r} listed twice")
        served = {v.model: v.name for v in self.variants}
        for model in self.shadow:
            if model in served:
                raise ValueError(
                    f"shadow: model {model!r} already serves variant {served[model]!r}"
                )
        return self

    def bucket(self, user_id: str) -> int:
        """The user's bucket in [0, BUCKETS): PlanOut's salted sha1 of `salt.user_id`."""
        return bucket(self.salt, user_id)

    def assign(self, user_id: str) -> tuple[Variant, int]:
        """The user's variant (and bucket): sticky while the salt and weights stay."""
        b = self.bucket(user_id)
        for variant, bound in zip(self.variants, self.bounds, strict=True):
            if b < bound:
                return variant, b
        return self.variants[-1], b  # unreachable: the last bound is BUCKETS

    @property
    def bounds(self) -> list[int]:
        """Exclusive upper bucket of each variant: cumulative weights x 100, the last = BUCKETS."""
        total, bounds = 0.0, []
        for variant in self.variants:
            total += variant.weight
            bounds.append(round(total * BUCKETS / 100.0))
        bounds[-1] = BUCKETS
        return bounds

    @property
    def models(self) -> list[str]:
        """Every model the experiment needs: its variants' and its shadows'."""
        return [v.model for v in self.variants] + list(self.shadow)


class ExperimentsFile(_Strict):
    """The whole file: experiments side by side, and the default one."""

    experiments: list[Experiment] = Field(min_length=1)
    default: str | None = Field(
        default=None, description="experiment of requests naming neither model nor experiment"
    )

    @model_validator(mode="after")
    def _check(self) -> ExperimentsFile:
        duplicate = _first_duplicate([e.name for e in self.experiments])
        if duplicate is not None:
            raise ValueError(f"experiments: duplicate experiment name {duplicate!r}")
        if self.default is not None and self.get(self.default) is None:
            raise ValueError(
                f"default: no experiment named {self.default!r} "
                f"(experiments: {[e.name for e in self.experiments]})"
            )
        return self

    def get(self, name: str) -> Experiment | None:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        return None

    @property
    def default_experiment(self) -> Experiment:
        found = self.get(self.default) if self.default is not None else None
        return found or self.experiments[0]

    @property
    def models(self) -> list[str]:
        """Every model any experiment needs, in file order, once each."""
        return list(dict.fromkeys(m for e in self.experiments for m in e.models))

    # ---- loading and checking ------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> ExperimentsFile:
        """Read and validate `path`; ExperimentsError naming the file (and line, or key) if bad."""
        raw = read_yaml(path, "experiments", ExperimentsError)
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "experiments") -> ExperimentsFile:
        if not isinstance(raw, Mapping):
            raise ExperimentsError(
                f"{source}: expected a mapping with an 'experiments' list, got {type(raw).__name__}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            message = describe_validation_error(err, raw)
            # a check of a whole entry names its key first: "experiments[0]: variants: ..."
            message = re.sub(r"^([\w\[\].]+): (variants|shadow): ", r"\1.\2: ", message)
            raise ExperimentsError(f"{source}: {message}") from None

    def check_models(self, available: Collection[str], source: str = "experiments") -> None:
        """ExperimentsError naming the key of the first model that is not in `available`."""
        for e, experiment in enumerate(self.experiments):
            for v, variant in enumerate(experiment.variants):
                if variant.model not in available:
                    raise ExperimentsError(
                        f"{source}: experiments[{e}].variants[{v}].model: model "
                        f"{variant.model!r} is not served (models: {sorted(available)}) "
                        f"(experiment {experiment.name!r})"
                    )
            for s, model in enumerate(experiment.shadow):
                if model not in available:
                    raise ExperimentsError(
                        f"{source}: experiments[{e}].shadow[{s}]: model {model!r} is not "
                        f"served (models: {sorted(available)}) (experiment {experiment.name!r})"
                    )

    def check_policies(
        self, policies: PolicySet, models: Mapping[str, Scorer], source: str = "experiments"
    ) -> None:
        """ExperimentsError naming the key of the first variant whose policy is unknown or does
        not fit its model (an output or numeric feature the model lacks); `models` are the
        served ones (`check_models` passed)."""
        for e, experiment in enumerate(self.experiments):
            for v, variant in enumerate(experiment.variants):
                model = models.get(variant.model)
                if variant.policy is None or model is None:
                    continue
                where = f"{source}: experiments[{e}].variants[{v}].policy"
                policy = policies.find(variant.policy, model.outputs)
                if policy is None:
                    raise ExperimentsError(
                        f"{where}: unknown policy {variant.policy!r} (policies"
                        f"{f' in {policies.source}' if policies.source else ''}: "
                        f"{sorted(policies.policies)}; outputs of model {model.name!r}: "
                        f"{model.outputs}) (experiment {experiment.name!r})"
                    )
                problem = policy.problem(model)
                if problem is not None:
                    key, why = problem
                    raise ExperimentsError(
                        f"{where}: {why} ({policies.where(policy.name)}.{key}) "
                        f"(experiment {experiment.name!r})"
                    )


def bucket(salt: str, user_id: str) -> int:
    """PlanOut's unit hash: the first 60 bits of sha1(f"{salt}.{user_id}"), modulo BUCKETS."""
    digest = hashlib.sha1(f"{salt}.{user_id}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:15], 16) % BUCKETS


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
