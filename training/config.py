"""The typed training config (`mtrank train --config FILE`): unknown keys are errors naming the key.

architecture: mmoe            # optional; must match --model when both are given
hparams: {num_experts: 4, expert_units: [64], tower_units: [32]}
optimizer: {name: adam, learning_rate: 0.002}
batch_size: 4096
epochs: 5
early_stopping: {patience: 1, monitor: val_loss}
task_weights: {ctr: 1.0, cvr: 1.0}
loss_weighting: fixed         # or uncertainty
mixed_precision: false        # mixed_float16 on GPU, mixed_bfloat16 on CPU
jit_compile: false            # XLA
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from ranker.errors import ConfigError
from ranker.schema import read_yaml, validate_mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Strict):
    name: Literal["adam", "adagrad", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(default=0.002, gt=0)
    clipnorm: float | None = Field(default=None, gt=0)


class EarlyStoppingConfig(_Strict):
    enabled: bool = True
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: int = Field(default=1, ge=0)
    min_delta: float = Field(default=0.0, ge=0)

    @property
    def direction(self) -> Literal["min", "max"]:
        """`auto` means max for AUC-like metrics and min for losses (Keras' own `auto` gets AUC wrong)."""
        if self.mode != "auto":
            return self.mode
        return "max" if "auc" in self.monitor else "min"


class TrainConfig(_Strict):
    architecture: str | None = None
    hparams: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    batch_size: int = Field(default=4096, ge=1)
    epochs: int = Field(default=5, ge=1)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    task_weights: dict[str, float] = Field(default_factory=dict)
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"
    mixed_precision: bool = False
    jit_compile: bool = False
    shuffle_buffer: int = Field(default=262_144, ge=1)
    adapt_rows: int = Field(default=100_000, ge=1)
    seed: int = 0

    @classmethod
    def load(cls, path: str | Path | None) -> Self:
        if path is None:
            return cls()
        raw = read_yaml(path, "config", ConfigError) or {}
        return validate_mapping(cls, raw, str(path), ConfigError, "a mapping of config keys")
