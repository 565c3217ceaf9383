"""MRN: a network per task, their last layers tied by a tensor normal prior on the stacked weights.

From "Learning Multiple Tasks with Multilinear Relationship Networks" (Long, Cao, Wang and Yu,
NeurIPS 2017). The paper shares the lower (feature) layers and gives the task-specific layers'
weights, stacked across tasks into W [D_in, D_out, T], the prior TN(0, Σ_in, Σ_out, Σ_T): input
feature, output feature and task covariances, fit in closed form (flip-flop) between gradient
steps (`ranker.layers.mrn`). Here the shared layers are the feature inputs (and crosses), each task
has an MLP of `units` over them, and the prior sits on the MLPs' last kernels (the paper also puts
it on the layer below, fc7); its negative log density, times `prior_strength`, is added to the
regularization loss, and the covariances are refit every `update_interval` training steps.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import tf
from ranker.layers.mlp import MLP
from ranker.layers.mrn import TensorNormalPrior
from ranker.registry import register


class MRNConfig(ArchitectureConfig):
    units: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    # the paper's MAP objective sums the examples' losses, so against the mean loss the prior
    # weighs 1 / (training rows): 1e-4, a 10k-row log's (on 4096 click-log rows, 4 epochs,
    # 1e-4 to 1e-2 gave the same validation losses as 0 within 0.002)
    prior_strength: float = Field(default=1e-4, ge=0.0)
    # training steps between covariance updates; 1, as the paper's alternating optimization
    update_interval: int = Field(default=1, ge=1)
    # ε I added to each covariance at mean eigenvalue 1 (`ranker.layers.mrn`): a relative floor;
    # 1e-3 and 1e-2 trained alike on the click log, 1e-2 keeps float32 Cholesky well conditioned
    epsilon: float = Field(default=1e-2, gt=0.0)


@register("mrn")
class MRN(Backbone):
    """Task k's representation is `towers[k](x)`; `prior` reads the towers' last kernels."""

    Config = MRNConfig

    def __init__(
        self,
        num_tasks: int,
        units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        prior_strength: float = 1e-4,
        update_interval: int = 1,
        epsilon: float = 1e-2,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if not units or any(int(n) < 1 for n in units):
            raise ValueError(f"MRN units must be a non-empty list of widths >= 1, got {units}")
        self.units = [int(n) for n in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.towers = [
            MLP(self.units, activation=activation, dropout=dropout, name=f"task_{k}")
            for k in range(num_tasks)
        ]
        self.prior = TensorNormalPrior(prior_strength, update_interval, epsilon, name="prior")

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> MRN:
        return cls(
            num_tasks,
            hp.units,
            hp.activation,
            hp.dropout,
            hp.prior_strength,
            hp.update_interval,
            hp.epsilon,
        )

    def related_weights(self) -> tf.Tensor:
        """The towers' last kernels stacked over tasks, W [D_in, D_out, T] (the towers built)."""
        return tf.stack([tower.dense_layers[-1].kernel for tower in self.towers], axis=-1)

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        representations = [tower(x, training=training) for tower in self.towers]
        self.prior(self.related_weights(), training=training)
        return representations, {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
            "prior_strength": self.prior.strength,
            "update_interval": self.prior.update_interval,
            "epsilon": self.prior.epsilon,
        }
