"""ESCM2: ESMM plus a counterfactual risk on the conditioned task (CVR), over the entire space.

From "ESCM2: Entire Space Counterfactual Multi-Task Model for Post-Click Conversion Rate
Estimation" (Wang et al., SIGIR 2022). ESMM fits CVR only through ctcvr = ctr * cvr, which lets
pCVR drift above the true rate (the paper's inherent estimation bias) and ignores that conversion
follows the click. ESCM2 adds, for each conditioned task (cvr, `condition: click`), a
counterfactual risk over all impressions of the batch, with the parent task's score (pCTR) as the
propensity of observing the label: o = the condition label, e = BCE(label, pCVR) per row, p =
pCTR raised to at least `propensity_clip`.

- `ips`: mean(o * e / p), an unbiased estimate of the CVR risk over all impressions when pCTR is
  the true click probability;
- `dr` (doubly robust): mean(e_hat + o * (e - e_hat) / p), with e_hat the error an imputation tower
  predicts from the task's representation (unbiased when either pCTR or e_hat is right), plus the
  imputation tower's own loss mean(o * (e - e_hat)^2 / p).

Both are scaled by `counterfactual_weight` (the paper's lambda_c; the ctcvr objective, weight 1,
is its global risk, lambda_g = 1). As in PaddleRec's escm2 (static_model.py), the propensity is a
constant of the risk (stop-gradient: the risk never trains the CTR tower, which could otherwise
lower it by raising pCTR) and e and e_hat get gradients from both terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from ranker.architectures.base import Backbone
from ranker.architectures.esmm import ESMM, ESMMConfig
from ranker.keras_compat import keras, tf
from ranker.layers.tower import Tower
from ranker.registry import register
from ranker.schema import Schema

_VARIANTS = ("ips", "dr")


class ESCM2Config(ESMMConfig):
    # PaddleRec's setting (counterfact_mode: DR in both of its configs)
    variant: Literal["ips", "dr"] = "dr"
    # lambda_c with lambda_g = 1: MMLRec's ESCM (counterfactual_w 0.1, global_w 1); PaddleRec's
    # configs use 0.01 (global 1) and 0.5 (global 0.5)
    counterfactual_weight: float = Field(default=0.1, ge=0.0)
    # PaddleRec caps the inverse propensity at 15: pCTR below 1/15 counts as 1/15
    propensity_clip: float = Field(default=1 / 15, gt=0.0, le=1.0)


@register("escm2")
class ESCM2(ESMM):
    """ESMM's backbone (the base's representations, entire-space products) whose `output_losses`
    are each conditioned task's counterfactual risk (and, for `dr`, its imputation loss).

    `imputation_towers` (`dr` only): one tower per task on the task's representation, predicting
    the error before a softplus (e_hat >= 0, like the cross-entropy it imputes; PaddleRec's
    softmax kept it below 1). Only the conditioned tasks' towers are trained; all are built on the
    first call, so that an export finds every layer built, and never run at inference.
    """

    Config = ESCM2Config

    def __init__(
        self,
        num_tasks: int,
        base: Backbone | dict[str, Any],
        variant: str = "dr",
        counterfactual_weight: float = 0.1,
        propensity_clip: float = 1 / 15,
        imputation_towers: Sequence[Tower | dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, base, **kwargs)
        if variant not in _VARIANTS:
            raise ValueError(f"ESCM2 variant must be one of {_VARIANTS}, got {variant!r}")
        if counterfactual_weight < 0:
            raise ValueError(
                f"ESCM2 counterfactual_weight must be >= 0, got {counterfactual_weight}"
            )
        if not 0.0 < propensity_clip <= 1.0:
            raise ValueError(f"ESCM2 propensity_clip must be in (0, 1], got {propensity_clip}")
        towers = list(imputation_towers or [])
        expected = num_tasks if variant == "dr" else 0
        if len(towers) != expected:
            raise ValueError(
                f"ESCM2 variant {variant!r} needs {expected} imputation towers (one per task "
                f"for dr, none for ips), got {len(towers)}"
            )
        self.variant = variant
        self.counterfactual_weight = float(counterfactual_weight)
        self.propensity_clip = float(propensity_clip)
        self.imputation_towers: list[Tower] = [
            keras.layers.deserialize(t) if isinstance(t, dict) else t for t in towers
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> ESCM2:
        towers = [
            Tower(
                hidden=hp.mlp(hp.tower_units, name=f"imputation_{k}_hidden"),
                task_type="regression",
                name=f"imputation_{k}",
            )
            for k in range(num_tasks)
            if hp.variant == "dr"
        ]
        return cls(
            num_tasks,
            base=ESMM.base_from_hparams(hp, num_tasks),
            variant=hp.variant,
            counterfactual_weight=hp.counterfactual_weight,
            propensity_clip=hp.propensity_clip,
            imputation_towers=towers,
        )

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        representations, gates = super().call_with_gates(x, training=training)
        for k, tower in enumerate(self.imputation_towers):  # none for ips
            if not tower.built:  # built once, here; used by `output_losses` only
                tower(representations[k])
        return representations, gates

    def imputed_errors(
        self, k: int, representation: tf.Tensor, training: bool | None = None
    ) -> tf.Tensor:
        """Task k's imputed error e_hat [B] (>= 0) from its representation (`dr` only)."""
        raw = self.imputation_towers[k](representation, training=training)
        return tf.nn.softplus(raw)

    def output_losses(
        self,
        schema: Schema,
        scores: dict[str, tf.Tensor],
        labels: Mapping[str, tf.Tensor],
        representations: list[tf.Tensor],
        training: bool,
    ) -> dict[str, tf.Tensor]:
        """Per conditioned task, `{task}_counterfactual_risk` (and for `dr`
        `{task}_imputation_loss`), both times `counterfactual_weight`, over all rows."""
        parents = {task.label: task for task in schema.tasks}
        terms = {}
        for k, task in enumerate(schema.tasks):
            if task.condition is None:
                continue
            observed = _column(labels, task.condition)
            propensity = tf.stop_gradient(
                tf.clip_by_value(
                    tf.reshape(scores[parents[task.condition].name], [-1]),
                    self.propensity_clip,
                    1.0,
                )
            )
            error = keras.losses.binary_crossentropy(
                _column(labels, task.label)[:, tf.newaxis],
                tf.reshape(scores[task.name], [-1, 1]),
            )
            weight = self.counterfactual_weight
            if self.variant == "ips":
                risk = tf.reduce_mean(observed * error / propensity)
            else:
                imputed = tf.cast(
                    self.imputed_errors(k, representations[k], training=training), tf.float32
                )
                residual = error - imputed
                risk = tf.reduce_mean(imputed + observed * residual / propensity)
                imputation = tf.reduce_mean(observed * tf.square(residual) / propensity)
                terms[f"{task.name}_imputation_loss"] = weight * imputation
            terms[f"{task.name}_counterfactual_risk"] = weight * risk
        return terms

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "variant": self.variant,
            "counterfactual_weight": self.counterfactual_weight,
            "propensity_clip": self.propensity_clip,
            "imputation_towers": [keras.layers.serialize(t) for t in self.imputation_towers],
        }


def _column(labels: Mapping[str, tf.Tensor], name: str) -> tf.Tensor:
    return tf.reshape(tf.cast(labels[name], tf.float32), [-1])
