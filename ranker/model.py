"""The multi-task ranking model: feature inputs -> architecture backbone -> task towers -> products.

`RankingModel(schema, "mmoe", hparams)` takes a dict of raw features and returns a dict of scores,
one per task and one per product (ctcvr = ctr * cvr). It is a `tfrs.models.Model`: its
`compute_loss` sums the objectives of `ranker.tasks` (masked CVR, or ESMM's entire-space ctcvr),
combined by a loss-weighting strategy of `ranker.losses`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import tensorflow_recommenders as tfrs

from ranker import registry
from ranker.architectures.base import ArchitectureConfig
from ranker.keras_compat import keras, tf
from ranker.layers.inputs import FeatureInputs
from ranker.layers.mlp import MLP
from ranker.layers.tower import ScoreProduct, Tower
from ranker.losses import FixedWeights, UncertaintyWeights
from ranker.schema import Schema
from ranker.tasks import Objective, build_objectives

LossWeighting = Literal["fixed", "uncertainty"]
# how a masked objective's loss is averaged: over the whole batch (observed rows' share of it
# weighs it), or over the observed rows only (each batch's few observed rows weigh like all rows)
MaskedLoss = Literal["batch", "observed"]


LOSS_NAMES = ("loss", "regularization_loss", "total_loss")


def loss_names(objectives: Iterable[Objective]) -> list[str]:
    """The losses a model logs (as means over an epoch's rows): the totals, then each objective's."""
    return [*LOSS_NAMES, *(f"{objective.output}_loss" for objective in objectives)]


def log_names(schema: Schema, architecture: str, train_metrics: bool = True) -> list[str]:
    """What `fit` logs each epoch for a model of `architecture`: on validation data (prefixed
    `val_`) each objective's metric, each objective's loss and the total losses; on training
    data the same, less the metrics unless `train_metrics`."""
    objectives = build_objectives(schema, registry.get(architecture).entire_space)
    metrics = [objective.metric_name for objective in objectives]
    losses = loss_names(objectives)
    validation = [f"val_{name}" for name in [*metrics, *losses]]
    return [*validation, *(metrics if train_metrics else []), *losses]


class RankingModel(tfrs.models.Model):
    """A registered architecture over the schema's features, with a tower per task."""

    def __init__(
        self,
        schema: Schema | Mapping[str, Any],
        architecture: str,
        hparams: ArchitectureConfig | Mapping[str, Any] | None = None,
        task_weights: Mapping[str, float] | None = None,
        loss_weighting: LossWeighting = "fixed",
        train_metrics: bool = False,
        masked_loss: MaskedLoss = "batch",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)  # raw float features are not cast to the compute dtype
        super().__init__(**kwargs)
        self.schema = schema if isinstance(schema, Schema) else Schema.from_dict(schema)
        self.architecture = architecture
        arch = registry.get(architecture)
        self.hparams = (
            hparams
            if isinstance(hparams, ArchitectureConfig)
            else arch.parse_config(dict(hparams or {}))
        )
        self.task_weights = dict(task_weights or {})
        self.loss_weighting_name = loss_weighting
        tasks = self.schema.tasks
        self.backbone = arch.from_hparams(self.hparams, len(tasks))
        self.separate_inputs = arch.separate_inputs
        copies = len(tasks) if arch.separate_inputs else 1
        hp = self.hparams
        self.feature_inputs = [
            FeatureInputs(
                self.schema.features,
                embedding_l2=hp.embedding_l2,
                vocabulary_embedding_l2=hp.vocabulary_embedding_l2,
                name=f"inputs_{k}" if self.separate_inputs else "inputs",
            )
            for k in range(copies)
        ]
        # optional explicit feature crosses (DCN-v2) on the input vector, before the backbone
        self.crosses = [
            tfrs.layers.dcn.Cross(projection_dim=hp.cross_projection_dim, name=f"cross_{i}")
            for i in range(hp.crosses_for(self.schema.features))
        ]
        self.towers = [
            Tower(
                hidden=MLP(hp.tower_units, activation=hp.activation, dropout=hp.dropout),
                task_type=task.type,
                name=f"{task.name}_tower",
            )
            for task in tasks
        ]
        self.product = ScoreProduct(name="product")
        self.objectives = build_objectives(self.schema, arch.entire_space, self.task_weights)
        self.ranking_tasks = [objective.ranking_task() for objective in self.objectives]
        self.train_metrics = bool(train_metrics)
        if masked_loss not in ("batch", "observed"):
            raise ValueError(f"masked_loss must be 'batch' or 'observed', got {masked_loss!r}")
        self.masked_loss = masked_loss
        self.loss_trackers = {
            name: keras.metrics.Mean(name=name) for name in loss_names(self.objectives)
        }
        names = [objective.output for objective in self.objectives]
        self.loss_weighting: keras.layers.Layer
        if loss_weighting == "fixed":
            self.loss_weighting = FixedWeights({o.output: o.weight for o in self.objectives})
        elif loss_weighting == "uncertainty":
            self.loss_weighting = UncertaintyWeights(names)
        else:
            raise ValueError(
                f"loss_weighting must be 'fixed' or 'uncertainty', got {loss_weighting!r}"
            )

    # ---- inference -----------------------------------------------------------------------------

    def adapt(self, batches: Iterable[Mapping[str, Any]]) -> None:
        """Fits the numeric normalization statistics on raw training batches (before training)."""
        batches = list(batches)
        for inputs in self.feature_inputs:
            inputs.adapt(batches)

    def call(
        self, features: Mapping[str, Any], training: bool | None = False
    ) -> dict[str, tf.Tensor]:
        return self._forward(features, training)[0]

    def inference_layers(self) -> list[keras.layers.Layer]:
        """Every layer `call` uses (not the losses, metrics or optimizer): what an export must keep."""
        return [*self.feature_inputs, *self.crosses, self.backbone, *self.towers, self.product]

    def gate_weights(self, features: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """For gated architectures, each task's weights over its experts [B, E] (diagnostics only)."""
        gates = self._forward(features, training=False)[1]
        names = [task.name for task in self.schema.tasks]
        result = {}
        for key, weights in gates.items():
            task_key, _, level = key.partition("/")
            name = names[int(task_key.removeprefix("task"))]
            result[f"{name}/{level}" if level else name] = weights
        return result

    def _forward(
        self, features: Mapping[str, Any], training: bool | None
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        encoded = [self._cross(inputs(features)) for inputs in self.feature_inputs]
        x = encoded if self.separate_inputs else encoded[0]
        representations, gates = self.backbone(x, training=training, gates=True)
        scores = {
            task.name: tower(rep, training=training)
            for task, tower, rep in zip(
                self.schema.tasks, self.towers, representations, strict=True
            )
        }
        for product in self.schema.products:
            scores[product.name] = self.product([scores[name] for name in product.of])
        return scores, gates

    def _cross(self, x0: tf.Tensor) -> tf.Tensor:
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        return x

    # ---- training ------------------------------------------------------------------------------

    def compute_loss(self, inputs: Any, training: bool = False) -> tf.Tensor:
        """The weighted sum of objective losses; masked objectives average over observed rows only."""
        return self._objective_losses(inputs, training, compute_metrics=True)[0]

    def _objective_losses(
        self, inputs: Any, training: bool, compute_metrics: bool
    ) -> tuple[tf.Tensor, dict[str, tuple[tf.Tensor, tf.Tensor]]]:
        """(the weighted loss, {output: (its loss, the rows it averages over)}) of one batch."""
        features, labels = inputs
        scores = self(features, training=training)
        losses, rows = {}, {}
        for objective, task in zip(self.objectives, self.ranking_tasks, strict=True):
            target, weight = objective.targets(labels)
            per_example = task(
                labels=target[:, tf.newaxis],
                predictions=scores[objective.output][:, tf.newaxis],
                sample_weight=weight,
                training=training,
                compute_metrics=compute_metrics,
            )
            batch = tf.cast(tf.size(target), tf.float32)
            count = batch if weight is None else tf.reduce_sum(weight)
            rows[objective.output] = count
            divisor = batch if self.masked_loss == "batch" else count
            losses[objective.output] = tf.reduce_sum(per_example) / tf.maximum(divisor, 1.0)
        parts = {name: (losses[name], rows[name]) for name in losses}
        return self.loss_weighting(losses), parts

    def train_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        """One step: gradients of the loss (scaled and unscaled under mixed_float16's loss-scale
        optimizer), embedding gradients made dense (`_dense`), then the optimizer's update.

        Task metrics (AUC, RMSE) are computed on the training batches only with
        `train_metrics=True`: they cost time every step and early stopping reads the validation
        ones, which `test_step` always computes.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, parts = self._objective_losses(inputs, True, self.train_metrics)
            regularization = self._regularization()
            # each replica's gradient is summed across replicas: scale to the global mean
            total = (loss + regularization) / float(replicas)
            scaled = total
            if hasattr(self.optimizer, "get_scaled_loss"):  # mixed_float16's loss scaling
                scaled = self.optimizer.get_scaled_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        if hasattr(self.optimizer, "get_unscaled_gradients"):
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        self.optimizer.apply_gradients(
            [(_dense(g), v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        )
        return self._logs(inputs, loss, regularization, parts, self.train_metrics)

    def test_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        loss, parts = self._objective_losses(inputs, False, compute_metrics=True)
        regularization = self._regularization()
        return self._logs(inputs, loss, regularization, parts, task_metrics=True)

    def _regularization(self) -> tf.Tensor:
        """The sum of the layers' regularization losses (embedding L2, ...); 0 without any."""
        return tf.add_n(self.losses) if self.losses else tf.constant(0.0)

    def _logs(
        self,
        inputs: Any,
        loss: tf.Tensor,
        regularization: tf.Tensor,
        parts: Mapping[str, tuple[tf.Tensor, tf.Tensor]],
        task_metrics: bool,
    ) -> dict[str, tf.Tensor]:
        """Every logged value as a mean over the epoch's rows so far (Keras would log the last
        batch's loss, which made `val_loss` one batch's noise and early stopping follow it)."""
        rows = tf.cast(tf.shape(next(iter(inputs[1].values())))[0], tf.float32)
        self.loss_trackers["loss"].update_state(loss, sample_weight=rows)
        self.loss_trackers["regularization_loss"].update_state(regularization, sample_weight=rows)
        self.loss_trackers["total_loss"].update_state(loss + regularization, sample_weight=rows)
        for name, (value, count) in parts.items():
            self.loss_trackers[f"{name}_loss"].update_state(value, sample_weight=count)
        shown = self.metrics if task_metrics else self.loss_trackers.values()
        return {metric.name: metric.result() for metric in shown}

    def get_config(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "architecture": self.architecture,
            "hparams": self.hparams.model_dump(mode="json"),
            "task_weights": self.task_weights,
            "loss_weighting": self.loss_weighting_name,
            "train_metrics": self.train_metrics,
            "masked_loss": self.masked_loss,
        }


def _dense(gradient: Any) -> Any:
    """An embedding table's sparse gradient (IndexedSlices) as a dense tensor.

    Keras' Adam, given IndexedSlices, deduplicates the rows (Unique, a segment sum), scatters them
    into its moments and then updates the whole table, moments and weights, anyway: a dense
    gradient does the same update with less work. On the wide table of benchmarks/datasets.py (a
    profile of MMoE's step at batch 1024) Adam's ops went from about 11 ms a step to about 2.
    """
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient
