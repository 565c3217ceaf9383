"""Training objectives built from the schema's tasks: what is scored, against which label, where.

A task with `condition: click` (CVR) is only observed where click == 1. Outside ESMM its loss is
masked to those rows (sample weight = the condition label), so conversion values on non-click rows
change nothing. Under ESMM (`entire_space=True`) it has no loss of its own: it is learned through the
product that pairs it with its condition's task (ctcvr = ctr * cvr), fit on click * conversion over
all impressions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import tensorflow_recommenders as tfrs

from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.schema import Schema, Task


@dataclass(frozen=True)
class Objective:
    """One loss term: model output `output` against the product of `labels`, weighted by `mask`."""

    output: str
    labels: tuple[str, ...]
    type: str  # "binary" or "regression"
    mask: str | None  # a label column: the loss counts only rows where it is 1
    weight: float

    @property
    def metric_name(self) -> str:
        """The name of the objective's metric in training logs: `{output}_auc` or `{output}_rmse`."""
        return f"{self.output}_auc" if self.type == "binary" else f"{self.output}_rmse"

    def ranking_task(self) -> tfrs.tasks.Ranking:
        """The TFRS task computing this objective's per-example loss and its metrics.

        The loss is unreduced (the model averages it over the rows that count), which also keeps it
        valid inside tf.distribute strategies.
        """
        reduction = keras.losses.Reduction.NONE
        if self.type == "binary":
            loss = keras.losses.BinaryCrossentropy(reduction=reduction)
            metrics = [keras.metrics.AUC(name=self.metric_name)]
        else:
            loss = keras.losses.MeanSquaredError(reduction=reduction)
            metrics = [keras.metrics.RootMeanSquaredError(name=self.metric_name)]
        return tfrs.tasks.Ranking(loss=loss, metrics=metrics, name=f"{self.output}_task")

    def targets(self, labels: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor | None]:
        """(label, sample weight) for a batch of label columns."""
        try:
            target = tf.cast(labels[self.labels[0]], tf.float32)
            for name in self.labels[1:]:
                target = target * tf.cast(labels[name], tf.float32)
            weight = tf.cast(labels[self.mask], tf.float32) if self.mask else None
        except KeyError as err:
            raise ConfigError(
                f"objective {self.output!r} needs label column {err.args[0]!r}"
            ) from None
        return tf.reshape(target, [-1]), None if weight is None else tf.reshape(weight, [-1])


def build_objectives(
    schema: Schema, entire_space: bool, weights: Mapping[str, float] | None = None
) -> list[Objective]:
    """The loss terms for `schema`'s tasks; `weights` (by task name) overrides the schema's."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - {t.name for t in schema.tasks})
    if unknown:
        raise ConfigError(
            f"task_weights: {unknown[0]!r} is not a task ({[t.name for t in schema.tasks]})"
        )
    by_label = {t.label: t for t in schema.tasks}
    scoring = schema.scoring()  # each output's labels and rows: the rule evaluation uses too
    objectives = []
    for task in schema.tasks:
        weight = weights.get(task.name, task.weight)
        output, kind = task.name, task.type
        if task.condition is not None and entire_space:
            output, kind = _product_of(schema, by_label[task.condition], task), "binary"
        rule = scoring[output]
        objectives.append(Objective(output, rule.labels, kind, rule.condition, weight))
    return objectives


def _product_of(schema: Schema, parent: Task, task: Task) -> str:
    for product in schema.products:
        if set(product.of) == {parent.name, task.name}:
            return product.name
    raise ConfigError(
        f"esmm: task {task.name!r} is conditioned on {parent.label!r}, so the schema needs a product "
        f"of [{parent.name}, {task.name}] (e.g. {{name: ctcvr, of: [{parent.name}, {task.name}]}})"
    )
