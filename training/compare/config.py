"""The config of `mtrank compare`: one training config for every variant, per-model overrides.

A variant is an architecture, optionally with a balancing strategy: `mmoe`, `mmoe+pcgrad`,
`ple+uncertainty` (the strategy replaces the config's `loss_weighting` for that variant).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from ranker.errors import ConfigError
from training.config import TrainConfig


class CompareConfig(TrainConfig):
    """A training config shared by every variant, plus per-architecture hyperparameter overrides.

    `hparams` keys apply to every variant whose architecture has them (the common ones, such as
    tower_units and dropout, apply to all); a key no compared architecture has is an error.
    `hparams_by_model: {mmoe: {num_experts: 8}}` overrides them for one variant.
    """

    hparams_by_model: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def load_compare(cls, path: str | Path | None) -> CompareConfig:
        config = cls.load(path)
        if config.architecture is not None:
            raise ConfigError(f"{path}: 'architecture' has no meaning for compare (use --models)")
        return config

    def for_model(self, variant: str, variants: Sequence[str], seed: int) -> TrainConfig:
        """The TrainConfig of one variant and seed: its share of `hparams`, then its overrides
        (`hparams_by_model` by architecture), then its strategy (`arch+strategy`)."""
        from ranker import registry

        architecture, strategy = split_variant(variant)
        models = list(dict.fromkeys(split_variant(v)[0] for v in variants))
        accepted = set(registry.get(architecture).Config.model_fields)
        known = set().union(*(registry.get(m).Config.model_fields for m in models))
        unknown = sorted(set(self.hparams) - known)
        if unknown:
            raise ConfigError(
                f"hparams key {unknown[0]!r} belongs to none of the compared models "
                f"({', '.join(models)})"
            )
        for name in self.hparams_by_model:
            if name not in models:
                raise ConfigError(
                    f"hparams_by_model key {name!r} is not a compared model ({', '.join(models)})"
                )
        hparams = {k: v for k, v in self.hparams.items() if k in accepted}
        hparams.update(self.hparams_by_model.get(architecture, {}))
        base = self.model_dump(exclude={"hparams_by_model"})
        base.update(hparams=hparams, seed=seed)
        if strategy is not None:
            base.update(loss_weighting=strategy)
        return TrainConfig.model_validate(base)


def split_variant(variant: str) -> tuple[str, str | None]:
    """`mmoe+pcgrad` -> ("mmoe", "pcgrad"); `mmoe` -> ("mmoe", None)."""
    architecture, plus, strategy = variant.partition("+")
    if plus and not strategy:
        raise ConfigError(f"--models: {variant!r} names no strategy after '+'")
    return architecture, strategy or None
