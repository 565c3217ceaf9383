"""The multi-task ranking model: feature inputs -> architecture backbone -> task towers -> products.

`RankingModel(schema, "mmoe", hparams)` takes a dict of raw features and returns a dict of scores,
one per task and one per product (ctcvr = ctr * cvr). It is a `tfrs.models.Model`: its
`compute_loss` sums the objectives of `ranker.tasks` (masked CVR, or ESMM's entire-space ctcvr),
with the coefficients of a balancing strategy of `ranker.balancing` (fixed weights by default;
loss weighting or gradient surgery), which also decides the training step's gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

import tensorflow_recommenders as tfrs

from ranker import balancing, registry
from ranker.architectures.base import ArchitectureConfig
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.inputs import FeatureInputs
from ranker.layers.mlp import MLP
from ranker.layers.tower import ScoreProduct, Tower
from ranker.schema import Schema
from ranker.tasks import Objective, build_objectives

# a balancing strategy by name, or a mapping with its name and hyperparameters (ranker.balancing)
LossWeighting = str | Mapping[str, Any]
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
    data the same, less the metrics unless `train_metrics`, and each objective's mean balancing
    coefficient (`{output}_weight`)."""
    objectives = build_objectives(schema, registry.get(architecture).entire_space)
    metrics = [objective.metric_name for objective in objectives]
    losses = loss_names(objectives)
    weights = [f"{objective.output}_weight" for objective in objectives]
    validation = [f"val_{name}" for name in [*metrics, *losses]]
    return [*validation, *(metrics if train_metrics else []), *losses, *weights]


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
        self.loss_weighting = (
            loss_weighting if isinstance(loss_weighting, str) else dict(loss_weighting)
        )
        tasks = self.schema.tasks
        self.backbone = arch.from_hparams(self.hparams, len(tasks))
        self.separate_inputs = arch.separate_inputs
        copies = arch.input_copies(len(tasks))
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
        self.direct_products = (
            _direct_products(self.schema) if arch.direct_products and arch.entire_space else {}
        )
        self.objectives = build_objectives(self.schema, arch.entire_space, self.task_weights)
        self.ranking_tasks = [objective.ranking_task() for objective in self.objectives]
        self.train_metrics = bool(train_metrics)
        if masked_loss not in ("batch", "observed"):
            raise ValueError(f"masked_loss must be 'batch' or 'observed', got {masked_loss!r}")
        self.masked_loss = masked_loss
        self.loss_trackers = {
            name: keras.metrics.Mean(name=name) for name in loss_names(self.objectives)
        }
        outputs = [objective.output for objective in self.objectives]
        self.balancer = balancing.build(
            loss_weighting, outputs, {o.output: o.weight for o in self.objectives}
        )
        self.weight_trackers = {name: keras.metrics.Mean(name=f"{name}_weight") for name in outputs}

    # ---- inference -----------------------------------------------------------------------------

    def adapt(self, batches: Iterable[Mapping[str, Any]]) -> None:
        """Fits the numeric normalization statistics on raw training batches (before training)."""
        batches = list(batches)
        for inputs in self.feature_inputs:
            inputs.adapt(batches)

    def call(
        self, features: Mapping[str, Any], training: bool | None = False
    ) -> dict[str, tf.Tensor]:
        return self._forward(features, training).scores

    def inference_layers(self) -> list[keras.layers.Layer]:
        """Every layer `call` uses (not the losses, metrics or optimizer): what an export must keep."""
        products = [p for p in self.schema.products if p.name not in self.direct_products]
        multiplies = [self.product] if products else []  # a direct product is a tower's output
        return [*self.feature_inputs, *self.crosses, self.backbone, *self.towers, *multiplies]

    def gate_weights(self, features: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """For gated architectures, each task's weights over its experts [B, E] (diagnostics only)."""
        gates = self._forward(features, training=False).gates
        names = [task.name for task in self.schema.tasks]
        result = {}
        for key, weights in gates.items():
            task_key, _, level = key.partition("/")
            name = names[int(task_key.removeprefix("task"))]
            result[f"{name}/{level}" if level else name] = weights
        return result

    def _forward(self, features: Mapping[str, Any], training: bool | None) -> Forward:
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
            if product.name in self.direct_products:
                # the conditioned task's tower predicted the product; its own score is the ratio
                parent, child = self.direct_products[product.name]
                scores[product.name] = scores[child]
                scores[child] = tf.clip_by_value(
                    tf.math.divide_no_nan(scores[child], scores[parent]), 0.0, 1.0
                )
            else:
                scores[product.name] = self.product([scores[name] for name in product.of])
        return Forward(scores, gates, encoded, representations)

    def _cross(self, x0: tf.Tensor) -> tf.Tensor:
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        return x

    # ---- training ------------------------------------------------------------------------------

    def compute_loss(self, inputs: Any, training: bool = False) -> tf.Tensor:
        """The weighted sum of objective losses (the balancing strategy's coefficients), plus the
        architecture's own loss terms (`Backbone.output_losses`); not the layers' penalties."""
        losses, _, _, extra = self._objective_losses(inputs, training, compute_metrics=True)
        return self.balancer(losses, training=training) + extra

    def _objective_losses(
        self, inputs: Any, training: bool, compute_metrics: bool
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor], list[tf.Tensor], tf.Tensor]:
        """({output: its loss}, {output: the rows it averages over}, the backbone's inputs, the
        sum of the architecture's own loss terms) of one batch; masked objectives average over
        the batch or their observed rows (`masked_loss`)."""
        features, labels = inputs
        forward = self._forward(features, training)
        scores = forward.scores
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
        terms = self.backbone.output_losses(
            self.schema, scores, labels, forward.representations, training
        )
        extra = tf.add_n(list(terms.values())) if terms else tf.constant(0.0)
        return losses, rows, forward.inputs, extra

    def train_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        """One step of the balancing strategy's update (`ranker.balancing.base` says which
        parameters get which coefficients), loss-scaled under mixed_float16, embedding gradients
        made dense (`_dense`), then the optimizer's update.

        Task metrics (AUC, RMSE) are computed on the training batches only with
        `train_metrics=True`: they cost time every step and early stopping reads the validation
        ones, which `test_step` always computes.
        """
        balancer = self.balancer
        if balancer.gradients == "none":
            with tf.GradientTape() as tape:
                losses, rows, _, extra = self._objective_losses(inputs, True, self.train_metrics)
                loss = balancer(losses, training=True)
                regularization = self._regularization(extra)
                scaled = self._scaled(loss + regularization)
            variables = self.trainable_variables
            gradients = self._unscaled(tape.gradient(scaled, variables))
        else:
            loss, regularization, losses, rows, variables, gradients = self._balanced_gradients(
                inputs
            )
        self.optimizer.apply_gradients(
            [(_dense(g), v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        )
        for name, value in zip(balancer.outputs, tf.unstack(balancer.effective), strict=True):
            self.weight_trackers[name].update_state(value)
        return self._logs(inputs, loss, regularization, losses, rows, training=True)

    def _balanced_gradients(self, inputs: Any) -> tuple[Any, ...]:
        """A gradient strategy's step: each task's gradient on the shared parameters (or the
        shared representation), the strategy's coefficients c from them, then every variable's
        gradient (module docstring of `ranker.balancing.base`)."""
        balancer = self.balancer
        with tf.GradientTape(persistent=True) as tape:
            losses, rows, representation, extra = self._objective_losses(
                inputs, True, self.train_metrics
            )
            regularization = self._regularization(extra)
            vector = balancer.stack(losses)
            per_task = [self._scaled(vector[k]) for k in range(balancer.num_tasks)]
        # after the forward pass, which builds the layers on the first call
        shared = [*self.backbone.trainable_variables, *_variables(self.crosses)]
        towers = _variables(self.towers)
        grouped = {v.ref() for v in [*shared, *towers]}
        others = [v for v in self.trainable_variables if v.ref() not in grouped]
        sources = shared if balancer.gradients == "shared" else representation
        task_gradients = tf.stack(
            [_flat(self._unscaled(tape.gradient(t, sources)), sources) for t in per_task]
        )
        coefficients = tf.stop_gradient(balancer.combine(task_gradients, vector))
        balancer.effective.assign(coefficients)
        fixed = tf.constant(balancer.fixed, tf.float32)
        surgery = balancer.gradients == "shared"
        with tape:  # the same tape, recording the weighted sums (every target must be recorded)
            loss = tf.reduce_sum(coefficients * vector) + balancer.regularizer()
            penalty = self._scaled(regularization)
            by_fixed = self._scaled(tf.reduce_sum(fixed * vector))
            # embeddings and the input layer: fixed weights under surgery on the shared dense
            # parameters; the coefficients where MGDA-UB chose them on their own output
            rest = (by_fixed if surgery else self._scaled(loss)) + penalty
        if surgery:
            shared_gradients = [
                g if r is None else g + tf.convert_to_tensor(r)
                for g, r in zip(
                    _unflat(
                        tf.linalg.matvec(task_gradients, coefficients, transpose_a=True), shared
                    ),
                    self._unscaled(tape.gradient(penalty, shared)),
                    strict=True,
                )
            ]
        else:
            shared_gradients = self._unscaled(tape.gradient(rest, shared))
        other_gradients = self._unscaled(tape.gradient(rest, others))
        tower_gradients = self._unscaled(tape.gradient(by_fixed, towers))
        del tape
        variables = [*shared, *others, *towers]
        gradients = [*shared_gradients, *other_gradients, *tower_gradients]
        return loss, regularization, losses, rows, variables, gradients

    def gradient_cosines(self, inputs: Any) -> dict[str, tf.Tensor]:
        """On one batch, the cosine similarity of each pair of objectives' gradients on the shared
        dense parameters (backbone, crosses), as `cosine_{a}_{b}`: below 0, the tasks pull the
        shared parameters apart (the conflict gradient surgery acts on). 0 where a task's
        gradient is 0 (parameters no two tasks share, e.g. single-task's)."""
        matrix = self._gradient_cosines(inputs)
        outputs = self.balancer.outputs
        return {
            f"cosine_{a}_{b}": matrix[i, j]
            for i, a in enumerate(outputs)
            for j, b in enumerate(outputs)
            if i < j
        }

    @tf.function
    def _gradient_cosines(self, inputs: Any) -> tf.Tensor:
        with tf.GradientTape(persistent=True) as tape:
            losses, _, _, _ = self._objective_losses(inputs, False, compute_metrics=False)
        shared = [*self.backbone.trainable_variables, *_variables(self.crosses)]
        rows = [
            _flat(tape.gradient(losses[name], shared), shared) for name in self.balancer.outputs
        ]
        del tape
        unit = tf.math.l2_normalize(tf.stack(rows), axis=1)
        return tf.matmul(unit, unit, transpose_b=True)

    def _scaled(self, loss: tf.Tensor) -> tf.Tensor:
        """A replica's loss as the optimizer differentiates it: over the replicas (their gradients
        are summed), times the loss scale under mixed_float16."""
        total = loss / float(tf.distribute.get_strategy().num_replicas_in_sync)
        if hasattr(self.optimizer, "get_scaled_loss"):
            return self.optimizer.get_scaled_loss(total)
        return total

    def _unscaled(self, gradients: list[Any]) -> list[Any]:
        if hasattr(self.optimizer, "get_unscaled_gradients"):
            return list(self.optimizer.get_unscaled_gradients(gradients))
        return list(gradients)

    def test_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        losses, rows, _, extra = self._objective_losses(inputs, False, compute_metrics=True)
        loss = self.balancer(losses, training=False)
        regularization = self._regularization(extra)
        return self._logs(inputs, loss, regularization, losses, rows, training=False)

    def _regularization(self, extra: tf.Tensor) -> tf.Tensor:
        """The sum of the layers' regularization losses (embedding L2, a gate's load balance,
        ...) and of the architecture's own loss terms (`extra`, `Backbone.output_losses`)."""
        return tf.add_n([*self.losses, extra])

    def _logs(
        self,
        inputs: Any,
        loss: tf.Tensor,
        regularization: tf.Tensor,
        losses: Mapping[str, tf.Tensor],
        rows: Mapping[str, tf.Tensor],
        training: bool,
    ) -> dict[str, tf.Tensor]:
        """Every logged value as a mean over the epoch's rows so far (Keras would log the last
        batch's loss, which made `val_loss` one batch's noise and early stopping follow it); in
        training, each objective's mean coefficient (`{output}_weight`) too."""
        batch = tf.cast(tf.shape(next(iter(inputs[1].values())))[0], tf.float32)
        self.loss_trackers["loss"].update_state(loss, sample_weight=batch)
        self.loss_trackers["regularization_loss"].update_state(regularization, sample_weight=batch)
        self.loss_trackers["total_loss"].update_state(loss + regularization, sample_weight=batch)
        for name, value in losses.items():
            self.loss_trackers[f"{name}_loss"].update_state(value, sample_weight=rows[name])
        task_metrics = not training or self.train_metrics
        weights = {id(m) for m in self.weight_trackers.values()}
        shown = (
            [m for m in self.metrics if id(m) not in weights]
            if task_metrics
            else list(self.loss_trackers.values())
        )
        if training:
            shown += list(self.weight_trackers.values())
        return {metric.name: metric.result() for metric in shown}

    def get_config(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "architecture": self.architecture,
            "hparams": self.hparams.model_dump(mode="json"),
            "task_weights": self.task_weights,
            "loss_weighting": (
                self.loss_weighting
                if isinstance(self.loss_weighting, str)
                else dict(self.loss_weighting)
            ),
            "train_metrics": self.train_metrics,
            "masked_loss": self.masked_loss,
        }


class Forward(NamedTuple):
    """One forward pass: the scores by output, the gate weights by task (gated architectures),
    the backbone's inputs (the representation every task reads) and its task representations."""

    scores: dict[str, tf.Tensor]
    gates: dict[str, tf.Tensor]
    inputs: list[tf.Tensor]
    representations: list[tf.Tensor]


def _direct_products(schema: Schema) -> dict[str, tuple[str, str]]:
    """{product: (parent task, conditioned task)} for architectures whose conditioned task's tower
    predicts the product itself; each product must pair a task with the task it is conditioned on."""
    pairs = schema.condition_pairs()
    for product in schema.products:
        if pairs[product.name] is None:
            raise ConfigError(
                f"products: {product.name!r} must pair a task with the task it is conditioned on "
                f"(e.g. of: [ctr, cvr] with cvr's condition ctr's label), got of: {product.of}"
            )
    return {name: pair for name, pair in pairs.items() if pair is not None}


def _variables(layers: Iterable[keras.layers.Layer]) -> list[tf.Variable]:
    return [v for layer in layers for v in layer.trainable_variables]


def _flat(gradients: list[Any], sources: list[Any]) -> tf.Tensor:
    """One task's gradients as one flat float32 vector (zeros where a source gets none)."""
    parts = [
        tf.zeros([tf.size(s)], tf.float32)
        if g is None
        else tf.reshape(tf.cast(tf.convert_to_tensor(g), tf.float32), [-1])
        for g, s in zip(gradients, sources, strict=True)
    ]
    return tf.concat(parts, axis=0)


def _unflat(vector: tf.Tensor, variables: list[tf.Variable]) -> list[tf.Tensor]:
    """A flat vector cut back into tensors shaped (and typed) as `variables`."""
    sizes = [v.shape.num_elements() for v in variables]
    pieces = tf.split(vector, sizes) if sizes else []
    return [
        tf.cast(tf.reshape(p, v.shape), v.dtype) for p, v in zip(pieces, variables, strict=True)
    ]


def _dense(gradient: Any) -> Any:
    """An embedding table's sparse gradient (IndexedSlices) as a dense tensor.

    Keras' Adam, given IndexedSlices, deduplicates the rows (Unique, a segment sum), scatters them
    into its moments and then updates the whole table, moments and weights, anyway: a dense
    gradient does the same update with less work. On the wide table of benchmarks/datasets.py (a
    profile of MMoE's step at batch 1024) Adam's ops went from about 11 ms a step to about 2.

    Not under ParameterServerStrategy: there the gradient travels from the worker to the
    parameter server that holds the table, and only its rows should travel.
    """
    if isinstance(gradient, tf.IndexedSlices) and not isinstance(
        tf.distribute.get_strategy(), tf.distribute.ParameterServerStrategy
    ):
        return tf.convert_to_tensor(gradient)
    return gradient
