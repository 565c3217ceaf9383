"""The typed training config (`mtrank train --config FILE`): unknown keys are errors naming the key.

architecture: mmoe            # optional; must match --model when both are given
hparams: {num_experts: 4, expert_units: [64], tower_units: [32]}
optimizer: {name: adam, learning_rate: 0.001}
batch_size: auto              # or a number; auto: from the training rows (see auto_batch_size)
epochs: 20                    # the most epochs; early stopping ends the run before, at the best
early_stopping: {patience: 2, monitor: val_loss}
task_weights: {ctr: 1.0, cvr: 1.0}
loss_weighting: fixed         # a strategy of ranker.balancing, or {name: cagrad, c: 0.4}
mixed_precision: false        # mixed_float16 on GPU, mixed_bfloat16 on CPU
jit_compile: false            # XLA
calibration: {method: isotonic, min_positives: 200, prior_rows: 10}   # fitted on val, exported
negative_sampling_rate: 1.0   # train.parquet kept the root task's negatives with this probability
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ranker.config_files import describe_validation_error, read_yaml, validate_mapping
from ranker.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Strict):
    name: Literal["adam", "adagrad", "sgd", "rmsprop"] = "adam"
    # Adam's usual 1e-3: 2e-3 (the default before issue 13) was worse at the small batches the
    # auto batch size gives small data (wide table: income AUC 0.822 against 0.833)
    learning_rate: float = Field(default=0.001, gt=0)
    clipnorm: float | None = Field(default=None, gt=0)


class EarlyStoppingConfig(_Strict):
    enabled: bool = True
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: int = Field(default=2, ge=0)
    min_delta: float = Field(default=0.0, ge=0)

    @property
    def direction(self) -> Literal["min", "max"]:
        """`auto` means max for AUC-like metrics and min for losses (Keras' own `auto` gets AUC wrong)."""
        if self.mode != "auto":
            return self.mode
        return "max" if "auc" in self.monitor else "min"


AUTO_BATCH_MIN, AUTO_BATCH_MAX = 128, 4096
AUTO_STEPS_PER_EPOCH = 1000


def auto_batch_size(train_rows: int) -> int:
    """The default batch: the power of two nearest train_rows / 1000, within [128, 4096].

    About a thousand steps an epoch whatever the data's size: 318k rows get 256 (what the quality
    config was tuned to), 60k rows 128, 4M rows and more 4096. Fewer, larger steps (the previous
    fixed 4096: 15 steps an epoch on 60k rows) stopped far from converged on small data.
    """
    target = max(train_rows, 1) / AUTO_STEPS_PER_EPOCH
    power = 2 ** round(math.log2(max(target, 1.0)))
    return int(min(max(power, AUTO_BATCH_MIN), AUTO_BATCH_MAX))


class CalibrationConfig(_Strict):
    """The per-task score calibrator fitted on the validation split (`training.calibration`):
    `isotonic` (pool-adjacent-violators), `platt`, `temperature`, or `none`. A task with fewer
    than `min_positives` positives or negatives on its validation rows keeps its scores (200: in
    benchmarks/calibration.py a CVR calibrator fitted on 69 validation conversions took the test
    calibration ratio from 0.965 to 0.771; on ~400 it held within the label noise).
    `prior_rows`: isotonic blocks' rates are smoothed by this many pseudo-rows at the block's mean
    score (0: plain block rates, 0 and 1 at the tails; with 10, the test CVR logloss of the 10%
    down-sampled 1M-row run of benchmarks/calibration.py went from 0.303 to 0.291, the raw
    scores' 0.291)."""

    method: Literal["isotonic", "platt", "temperature", "none"] = "isotonic"
    min_positives: int = Field(default=200, ge=1)
    prior_rows: float = Field(default=10.0, ge=0)


class TrainConfig(_Strict):
    architecture: str | None = None
    hparams: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    batch_size: int | Literal["auto"] = "auto"
    epochs: int = Field(default=20, ge=1)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    task_weights: dict[str, float] = Field(default_factory=dict)
    # the balancing strategy (ranker.balancing): a name, or a mapping with its name and
    # hyperparameters; checked against the strategy's own config when the model is built
    loss_weighting: str | dict[str, Any] = "fixed"
    # a conditioned task's (CVR's) loss: summed over its observed rows and averaged over the batch
    # ("batch", what Keras does with sample weights), or averaged over the observed rows only
    masked_loss: Literal["batch", "observed"] = "batch"
    mixed_precision: bool = False
    jit_compile: bool = False
    # training steps run per call into TensorFlow (Keras' steps_per_execution): fewer Python round
    # trips per epoch (+15-25% examples/s at batch 1024 on two cores, benchmarks/peer_throughput.py);
    # batch callbacks then see every Nth step. Multi-worker training runs one step per call.
    steps_per_execution: int = Field(default=32, ge=1)
    # AUC/RMSE on the training batches too (costs time every step; validation ones always run)
    train_metrics: bool = False
    shuffle_buffer: int = Field(default=262_144, ge=1)
    # a split whose tensors would take at most this many bytes is read once and kept in memory
    # (training.memory); 0 streams every split from its file each epoch
    memory_budget: int = Field(default=2 << 30, ge=0)
    adapt_rows: int = Field(default=100_000, ge=1)
    seed: int = Field(default=0, ge=0)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    # train.parquet kept the negatives of the root task (the first served binary task without a
    # condition: ctr) with this probability; val and test are not sampled. The export corrects
    # that task's score (`training.calibration.correct_negative_sampling`).
    negative_sampling_rate: float = 1.0

    @field_validator("batch_size")
    @classmethod
    def _check_batch_size(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be >= 1 (or 'auto'), got {value}")
        return value

    @field_validator("negative_sampling_rate")
    @classmethod
    def _check_rate(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"must be in (0, 1], got {value}")
        return value

    def with_overrides(self, **flags: Any) -> Self:
        """A copy with command-line values in place of the config's (None leaves a field), checked
        against the same bounds as the file: `--epochs must be >= 1, got 0`."""
        updates = {key: value for key, value in flags.items() if value is not None}
        merged = {**self.model_dump(exclude_unset=True), **updates}
        try:
            return type(self).model_validate(merged)
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            if field not in updates:
                raise ConfigError(describe_validation_error(err, merged)) from None
            flag = "--" + field.replace("_", "-")
            bound = (first.get("ctx") or {}).get("ge")
            if bound is not None:
                raise ConfigError(f"{flag} must be >= {bound}, got {updates[field]!r}") from None
            raise ConfigError(f"{flag} {first['msg'].removeprefix('Value error, ')}") from None

    def resolved(self, train_rows: int) -> Self:
        """This config with `batch_size: auto` replaced by `auto_batch_size(train_rows)`."""
        if self.batch_size != "auto":
            return self
        return self.model_copy(update={"batch_size": auto_batch_size(train_rows)})

    @property
    def global_batch(self) -> int:
        """The batch size of a resolved config (`resolved` turns 'auto' into a number)."""
        if not isinstance(self.batch_size, int):
            raise ConfigError("batch_size 'auto' must be resolved against the training rows first")
        return self.batch_size

    @classmethod
    def load(cls, path: str | Path | None) -> Self:
        if path is None:
            return cls()
        raw = read_yaml(path, "config", ConfigError) or {}
        return validate_mapping(cls, raw, str(path), ConfigError, "a mapping of config keys")
