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
from ranker.tasks import build_objectives

LossWeighting = Literal["fixed", "uncertainty"]


def log_names(schema: Schema, architecture: str) -> list[str]:
    """What `fit` logs each epoch for a model of `architecture` on training data (and, prefixed
    with `val_`, on validation data): each objective's metric, then the losses."""
    objectives = build_objectives(schema, registry.get(architecture).entire_space)
    metrics = [objective.metric_name for objective in objectives]
    return [*metrics, "loss", "regularization_loss", "total_loss"]


class RankingModel(tfrs.models.Model):
    """A registered architecture over the schema's features, with a tower per task."""

    def __init__(
        self,
        schema: Schema | Mapping[str, Any],
        architecture: str,
        hparams: ArchitectureConfig | Mapping[str, Any] | None = None,
        task_weights: Mapping[str, float] | None = None,
        loss_weighting: LossWeighting = "fixed",
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
            for i in range(hp.cross_layers)
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
        representations, gates = self.backbone.call_with_gates(x, training=training)
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
        features, labels = inputs
        scores = self(features, training=training)
        losses = {}
        for objective, task in zip(self.objectives, self.ranking_tasks, strict=True):
            target, weight = objective.targets(labels)
            per_example = task(
                labels=target[:, tf.newaxis],
                predictions=scores[objective.output][:, tf.newaxis],
                sample_weight=weight,
                training=training,
            )
            rows = tf.cast(tf.size(target), tf.float32) if weight is None else tf.reduce_sum(weight)
            losses[objective.output] = tf.reduce_sum(per_example) / tf.maximum(rows, 1.0)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self.loss_weighting(losses) / float(replicas)

    def train_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        """TFRS's step, but through `optimizer.minimize`, which scales the loss under mixed_float16."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
            total = loss + regularization
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        logs = {metric.name: metric.result() for metric in self.metrics}
        logs.update(loss=loss, regularization_loss=regularization, total_loss=total)
        return logs

    def get_config(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "architecture": self.architecture,
            "hparams": self.hparams.model_dump(mode="json"),
            "task_weights": self.task_weights,
            "loss_weighting": self.loss_weighting_name,
        }
