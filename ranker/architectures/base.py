"""What every architecture is: a backbone from the input vector to one representation per task.

The model (`ranker.model.RankingModel`) owns what is common: the feature inputs, one tower per task,
the products (ctcvr), the losses. An architecture only decides how tasks share computation, so adding
one means writing a `Backbone` subclass with a typed `Config` and registering it by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ranker.config_files import describe_validation_error
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP
from ranker.schema import Feature, Schema

AUTO_CROSS_LAYERS = 2


class ArchitectureConfig(BaseModel):
    """Hyperparameters every architecture has; each one extends this with its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The defaults are the choices README's "Defaults" section measured on several datasets: with
    # neither embedding L2 nor crosses, MMoE on the synthetic log stopped at epoch 1 (the ids
    # memorised) at 0.946 of the CTR oracle; with them (and the training defaults) at 0.977.
    tower_units: list[int] = Field(default_factory=lambda: [32])
    activation: str = "relu"
    # 0.1 measured no better on the click log or the wide table, and worse on regression tasks
    # (MSE 0.061 against 0.020): off by default
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # L2 on the hashed (`num_buckets`) embedding tables: ids, which memorise after an epoch
    embedding_l2: float = Field(default=1e-3, ge=0.0)
    # L2 on the vocabulary tables (category, country, ...): small, well covered; penalizing them
    # cost 0.008 of the CTR oracle's AUC on MMoE (README's quality section)
    vocabulary_embedding_l2: float = Field(default=0.0, ge=0.0)
    # DCN-v2 cross layers on the input vector (Wang et al., "DCN V2", WWW 2021): feature crosses.
    # auto: 2 when the schema embeds categorical or sequence features, 0 on numeric inputs alone
    # (on the MMoE paper's 100-numeric regression data two crosses took test MSE 0.03 to 0.14)
    cross_layers: int | Literal["auto"] = "auto"
    cross_projection_dim: int | None = Field(default=None, ge=1)

    @field_validator("cross_layers")
    @classmethod
    def _check_cross_layers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"must be >= 0 or 'auto', got {value}")
        return value

    def crosses_for(self, features: list[Feature]) -> int:
        """The number of cross layers over these input features (`auto` resolved)."""
        if self.cross_layers != "auto":
            return int(self.cross_layers)
        return AUTO_CROSS_LAYERS if any(f.is_embedded for f in features) else 0

    def mlp(self, units: list[int], name: str) -> MLP:
        return MLP(units=units, activation=self.activation, dropout=self.dropout, name=name)


class Backbone(keras.layers.Layer):
    """Maps the encoded input [B, D] to a list of `num_tasks` representations [B, D_k].

    Class attributes: `Config`, the architecture's hyperparameter model; `separate_inputs`, True
    when the model embeds the features more than once (the input is then a list of
    `input_copies` encodings: one per task by default); `entire_space`, True when conditioned
    tasks are learned through their product (ESMM); `direct_products` (with `entire_space`), True
    when a conditioned task's tower predicts its product itself (AITM: P(click and conversion)),
    the task's own score being the product over its condition's score.

    An architecture may add loss terms of its own (`output_losses`: AITM's calibrator, ESCM2's
    counterfactual risk); the model adds them to the regularization loss, with fixed weight 1
    (their strength is the architecture's config), outside any balancing strategy.
    """

    name_in_registry: ClassVar[str] = ""
    Config: ClassVar[type[ArchitectureConfig]] = ArchitectureConfig
    separate_inputs: ClassVar[bool] = False
    entire_space: ClassVar[bool] = False
    direct_products: ClassVar[bool] = False

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"{type(self).__name__} num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = int(num_tasks)

    @classmethod
    def input_copies(cls, num_tasks: int) -> int:
        """How many times the model embeds the features (each copy its own tables)."""
        return num_tasks if cls.separate_inputs else 1

    @classmethod
    def from_config_dict(cls, raw: dict[str, Any] | None, num_tasks: int) -> Backbone:
        """Validates `raw` against `Config` (unknown keys are errors naming the key) and builds."""
        return cls.from_hparams(cls.parse_config(raw), num_tasks)

    @classmethod
    def parse_config(cls, raw: dict[str, Any] | None) -> ArchitectureConfig:
        try:
            return cls.Config.model_validate(raw or {})
        except ValidationError as err:
            where = f"architecture {cls.name_in_registry!r}"
            raise ConfigError(f"{where}: {describe_validation_error(err, raw or {})}") from None

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> Backbone:
        raise NotImplementedError

    def call(
        self, x: Any, training: bool | None = None, gates: bool = False
    ) -> list[tf.Tensor] | tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        """The task representations; with `gates=True`, `call_with_gates`'s pair. Callers go
        through `__call__` (`backbone(x, gates=True)`), which marks the layer built, so that a
        SavedModel export serializes it fully."""
        representations, weights = self.call_with_gates(x, training=training)
        return (representations, weights) if gates else representations

    def call_with_gates(
        self, x: Any, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        """Representations and, for gated models, gate weights [B, E] keyed `task{k}` (or with a level)."""
        raise NotImplementedError

    def output_losses(
        self,
        schema: Schema,
        scores: dict[str, tf.Tensor],
        labels: Mapping[str, tf.Tensor],
        representations: list[tf.Tensor],
        training: bool,
    ) -> dict[str, tf.Tensor]:
        """Loss terms (scalars, by name) the architecture adds to the tasks' objectives, from a
        batch's scores, label columns and task representations; none by default."""
        return {}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_tasks": self.num_tasks}


def run_levels(
    levels: list[keras.layers.Layer], inputs: list[tf.Tensor], num_tasks: int, training: bool | None
) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
    """Stacked extraction levels (PLE's CGC layers, AdaTT's fusion levels), each mapping a list
    of inputs to (outputs, each task's gate weights): the last level's first `num_tasks` outputs,
    and the gate weights keyed `task{k}/level{l}`, the last level's `task{k}`."""
    gates: dict[str, tf.Tensor] = {}
    for index, level in enumerate(levels):
        inputs, level_gates = level(inputs, training=training)
        last = index == len(levels) - 1
        for k in range(num_tasks):
            gates[f"task{k}" if last else f"task{k}/level{index}"] = level_gates[k]
    return inputs[:num_tasks], gates


def task_columns(
    num_tasks: int, units: list[int], activation: str, dropout: float
) -> list[list[MLP]]:
    """One column of single-layer MLPs per task, `columns[k][l]` (cross-stitch, NDDR)."""
    return [
        [
            MLP([n], activation=activation, dropout=dropout, name=f"task_{k}_layer_{i}")
            for i, n in enumerate(units)
        ]
        for k in range(num_tasks)
    ]


def run_columns(
    columns: list[list[MLP]],
    mixers: list[keras.layers.Layer],
    x: tf.Tensor,
    training: bool | None,
) -> list[tf.Tensor]:
    """Per layer l: every task's column layer on its own state, then `mixers[l]` over the tasks'
    outputs (a list in, a list out); every task starts from `x`."""
    hidden = [x] * len(columns)
    for i, mixer in enumerate(mixers):
        hidden = [
            column[i](h, training=training) for column, h in zip(columns, hidden, strict=True)
        ]
        hidden = mixer(hidden, training=training)
    return hidden
