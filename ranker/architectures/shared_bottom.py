"""Shared-bottom: one network shared by all tasks, then a tower per task.

From "Multitask Learning" (Caruana, Machine Learning 1997): hard parameter sharing.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP
from ranker.registry import register


class SharedBottomConfig(ArchitectureConfig):
    bottom_units: list[int] = Field(default_factory=lambda: [128, 64])


@register("shared_bottom")
class SharedBottom(Backbone):
    """Every task reads the same representation, `bottom(x)`."""

    Config = SharedBottomConfig

    def __init__(self, num_tasks: int, bottom: MLP | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.bottom = keras.layers.deserialize(bottom) if isinstance(bottom, dict) else bottom

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> SharedBottom:
        return cls(num_tasks, bottom=hp.mlp(hp.bottom_units, name="bottom"))

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        shared = self.bottom(x, training=training)
        return [shared] * self.num_tasks, {}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bottom": keras.layers.serialize(self.bottom)}
