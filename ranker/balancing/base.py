"""What every balancing strategy is: per-task coefficients on the objectives' losses.

A strategy (`Balancer`) turns T objective losses into the training update. Every method the
multi-task literature offers here ends in a linear combination of the task losses' gradients,
`sum_k c_k * grad L_k`, so a strategy only chooses the coefficients c [T]:

- `gradients = "none"` (loss weighting: fixed, uncertainty, RLW, DWA, DTP, FAMO): `coefficients(losses)`
  gives c from the losses (and the strategy's state); the model takes one gradient of
  `sum_k c_k L_k + regularizer()`.
- `gradients = "shared"` (gradient surgery: PCGrad, CAGrad, GradNorm, ...): the model computes each
  task's gradient on the shared parameters, flattened to G [T, P], and `combine(G, losses)` gives c.
- `gradients = "representation"` (MGDA-UB): the same on the gradients of each task's loss with
  respect to the shared representation (the model's input vector, [T, B * D]) instead.

Which parameters get which coefficients (`RankingModel.train_step`):

- shared dense parameters (the backbone: bottoms, experts, gates; the cross layers):
  `G^T c` with "shared" strategies (no extra backward pass), else the gradient of `sum_k c_k L_k`;
- embedding tables and the input layer: with "representation" strategies the gradient of
  `sum_k c_k L_k` (the coefficients were chosen on their own output); with "shared" ones the
  gradient of `sum_k w_k L_k`, the fixed weights. Their gradients are sparse (`IndexedSlices`, a
  few rows of tables with up to millions): flattening them per task would cost T dense copies of
  every table, so they take no part in the surgery. Nor do they follow its coefficients: those
  are chosen to make the dense shared update `G^T c` conflict-free and can be large where the task
  gradients cancel there (CAGrad's c ||g0|| / ||g_w||, DB-MTL's magnitude ratios); applied to the
  embeddings, where nothing cancels, they blew up the CVR head on the synthetic world (CVR AUC
  0.50 under CAGrad and DB-MTL);
- task-specific parameters (the towers): the gradient of `sum_k w_k L_k` with the tasks' fixed
  weights `w` (surgery acts on what tasks share; a tower only ever sees its own task).

A strategy's state lives in non-trainable variables (`add_state`), updated in the training step
(`combine`, `coefficients`) or once per epoch from the epoch's mean task losses (`end_epoch`, called by
the trainer's callback). `effective` holds the last coefficients used, for the logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ranker.keras_compat import keras, tf

Gradients = Literal["none", "shared", "representation"]


class StrategyConfig(BaseModel):
    """A strategy's hyperparameters (subclassed per strategy; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Balancer(keras.layers.Layer):
    """Chooses the coefficients c [T] of the task losses (module docstring); the base: fixed."""

    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    gradients: ClassVar[Gradients] = "none"
    name_in_registry: ClassVar[str] = ""

    def __init__(
        self,
        outputs: Sequence[str],
        weights: Mapping[str, float] | None = None,
        config: StrategyConfig | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")  # losses and coefficients stay float32
        super().__init__(**kwargs)
        if not outputs:
            raise ValueError(f"{type(self).__name__} needs at least one objective, got []")
        given = dict(weights or {})
        bad = {k: v for k, v in given.items() if v < 0}
        if bad:
            raise ValueError(f"{type(self).__name__} weights must be >= 0, got {bad}")
        self.outputs = list(outputs)
        self.task_weights = {name: float(given.get(name, 1.0)) for name in self.outputs}
        self.config = (
            config
            if isinstance(config, self.Config)
            else self.Config.model_validate(dict(config or {}))
        )
        self.effective = self.add_state("effective", self.fixed)
        self.create_state()

    # ---- what strategies override ----------------------------------------------------------------

    def create_state(self) -> None:
        """Creates the strategy's variables (`add_state`, or trainable `add_weight`); called once
        by `__init__`, after `outputs`, `task_weights` and `config` are set. None here."""

    def coefficients(self, losses: tf.Tensor, training: bool) -> tf.Tensor:
        """c [T] from the batch's losses [T] ("none" strategies); may carry gradients (learned
        weights). The base: the tasks' fixed weights."""
        return tf.constant(self.fixed, tf.float32)

    def regularizer(self) -> tf.Tensor:
        """A term added to the weighted loss (uncertainty's log-variances); 0 by default."""
        return tf.constant(0.0)

    def combine(self, gradients: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        """c [T] from each task's gradient [T, P] and loss [T] ("shared", "representation")."""
        raise NotImplementedError(f"{type(self).__name__} does not combine gradients")

    def end_epoch(self, losses: Mapping[str, float]) -> None:
        """Host-side update once per epoch from the epoch's mean task losses (DWA); none here."""

    # ---- helpers ---------------------------------------------------------------------------------

    @property
    def fixed(self) -> list[float]:
        """The tasks' fixed weights, in `outputs` order."""
        return [self.task_weights[name] for name in self.outputs]

    @property
    def num_tasks(self) -> int:
        return len(self.outputs)

    def add_state(self, name: str, initial: Sequence[float] | float) -> tf.Variable:
        """A non-trainable float32 variable (averaged across replicas when assigned in a
        replica's training step), saved with the model's checkpoints, not with its export."""
        value = tf.constant(initial, tf.float32)
        return self.add_weight(
            name=name,
            shape=value.shape,
            initializer=keras.initializers.Constant(value.numpy()),
            trainable=False,
            dtype="float32",
            aggregation=tf.VariableAggregation.MEAN,
        )

    def stack(self, losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The losses as one [T] float32 vector, in `outputs` order."""
        return tf.stack([tf.cast(losses[name], tf.float32) for name in self.outputs])

    def call(self, losses: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """The training loss `sum_k c_k L_k + regularizer()` with c from `coefficients` (validation:
        `training=False`, the same formula without updating any state)."""
        vector = self.stack(losses)
        coefficients = self.coefficients(vector, training=bool(training))
        if training:
            self.effective.assign(tf.stop_gradient(coefficients))
        return tf.reduce_sum(coefficients * vector) + self.regularizer()

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "outputs": self.outputs,
            "weights": self.task_weights,
            "config": self.config.model_dump(mode="json"),
        }
