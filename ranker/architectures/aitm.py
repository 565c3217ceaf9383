"""AITM: each task in the conversion sequence adaptively takes in what the previous task learned.

From "Modeling the Sequential Dependence among Audience Multi-step Conversions with Multi-task
Learning in Targeted Display Advertising" (Xi et al., KDD 2021). The tasks are a sequence in schema
order (impression -> click -> conversion). Each task t has its own bottom q_t = bottom_t(x); from
the second task on, the previous task's representation is transferred, p_{t-1} = g_t(z_{t-1}) (one
dense layer), and the AIT attention (`ranker.layers.transfer`) pools {p_{t-1}, q_t} into z_t;
z_0 = q_0. The backbone returns z_0 .. z_{T-1}; the model's towers score them.

As in the paper, a conditioned task's tower predicts the end-to-end probability over all
impressions, P(click and conversion), fit on click * conversion (`entire_space`,
`direct_products`: the model serves it as the product, ctcvr, and derives cvr = ctcvr / ctr
clipped to [0, 1]). Nothing forces ctcvr <= ctr, so the behavioural expectation calibrator
(`output_losses`) adds calibrator_weight * mean_rows max(ctcvr - ctr, 0) for each product.
Defaults are the authors' (github.com/xidongbo/AITM, AITM.py): task bottoms 128-64-32, attention
over 32 dimensions, calibrator weight 0.6. Each task t >= 1 has its own transfer and attention
weights (the authors' multi-step AITM_standard.py shares one attention across the steps; with two
tasks the two are the same model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP, template_config
from ranker.layers.transfer import AdaptiveInformationTransfer
from ranker.registry import register
from ranker.schema import Schema


class AITMConfig(ArchitectureConfig):
    task_units: list[int] = Field(default_factory=lambda: [128, 64, 32], min_length=1)
    attention_units: int = Field(default=32, ge=1)
    # alpha, the calibrator's weight in the loss: the authors' AITM.py default and README run
    # (their later multi-step AITM_standard.py defaults to 0.3)
    calibrator_weight: float = Field(default=0.6, ge=0.0)


@register("aitm")
class AITM(Backbone):
    """A bottom per task; from the second task on, the AIT pooling of its own and the previous
    task's transferred representation (module docstring)."""

    Config = AITMConfig
    entire_space: ClassVar[bool] = True
    direct_products: ClassVar[bool] = True

    def __init__(
        self,
        num_tasks: int,
        task: MLP | dict[str, Any],
        attention_units: int = 32,
        calibrator_weight: float = 0.6,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if isinstance(task, dict):
            task = keras.layers.deserialize(task)
        if not isinstance(task, MLP) or not task.units:
            raise ValueError(f"AITM task must be an MLP with at least one layer, got {task!r}")
        if calibrator_weight < 0:
            raise ValueError(f"AITM calibrator_weight must be >= 0, got {calibrator_weight}")
        self.attention_units = int(attention_units)
        self.calibrator_weight = float(calibrator_weight)
        self._template_name = task.name
        self.bottoms = [task.clone(name=f"task_{k}_bottom") for k in range(self.num_tasks)]
        # transfers[t - 1] and attentions[t - 1] feed task t; p has q's width, so that the
        # attention's projections apply to both
        self.transfers = [
            MLP(
                [task.units[-1]],
                activation=task.activation,
                dropout=task.dropout,
                name=f"transfer_{t}",
            )
            for t in range(1, self.num_tasks)
        ]
        self.attentions = [
            AdaptiveInformationTransfer(self.attention_units, name=f"ait_{t}")
            for t in range(1, self.num_tasks)
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> AITM:
        return cls(
            num_tasks,
            task=hp.mlp(hp.task_units, name="task_bottom"),
            attention_units=hp.attention_units,
            calibrator_weight=hp.calibrator_weight,
        )

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        own = [bottom(x, training=training) for bottom in self.bottoms]
        representations = [own[0]]
        for t in range(1, self.num_tasks):
            transferred = self.transfers[t - 1](representations[-1], training=training)
            representations.append(self.attentions[t - 1]([transferred, own[t]]))
        return representations, {}

    def output_losses(
        self,
        schema: Schema,
        scores: dict[str, tf.Tensor],
        labels: Mapping[str, tf.Tensor],
        representations: list[tf.Tensor],
        training: bool,
    ) -> dict[str, tf.Tensor]:
        """The behavioural expectation calibrator, per product (e.g. `ctcvr_calibrator`):
        calibrator_weight * mean over rows of max(score[product] - score[its condition's task],
        0); the product's score is its tower's own prediction (`direct_products`)."""
        if not self.calibrator_weight:
            return {}
        terms = {}
        for product, pair in schema.condition_pairs().items():
            if pair is None:  # not a product of a conditioned task (the model refuses those)
                continue
            excess = tf.cast(scores[product], tf.float32) - tf.cast(scores[pair[0]], tf.float32)
            terms[f"{product}_calibrator"] = self.calibrator_weight * tf.reduce_mean(
                tf.nn.relu(excess)
            )
        return terms

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "task": template_config(self.bottoms[0], self._template_name),
            "attention_units": self.attention_units,
            "calibrator_weight": self.calibrator_weight,
        }
