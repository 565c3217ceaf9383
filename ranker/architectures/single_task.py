"""Single-task baseline: an independent network per task, with its own feature embeddings.

Nothing is shared, so each task is exactly the model one would train for it alone: the baseline
every multi-task architecture is compared against.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP, template_config
from ranker.registry import register


class SingleTaskConfig(ArchitectureConfig):
    units: list[int] = Field(default_factory=lambda: [128, 64])


@register("single_task")
class SingleTask(Backbone):
    """Task k's representation is `network_k(x_k)`, where x_k are task k's own embeddings."""

    Config = SingleTaskConfig
    separate_inputs: ClassVar[bool] = True

    def __init__(self, num_tasks: int, network: MLP | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        template = keras.layers.deserialize(network) if isinstance(network, dict) else network
        self.networks = [template.clone(name=f"task_{k}_network") for k in range(num_tasks)]
        self._template_name = template.name  # only the clones are kept (mlp.template_config)

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> SingleTask:
        return cls(num_tasks, network=hp.mlp(hp.units, name="network"))

    def call_with_gates(
        self, x: list[tf.Tensor], training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        if len(x) != self.num_tasks:
            raise ValueError(f"SingleTask expects {self.num_tasks} inputs, got {len(x)}")
        return [net(xk, training=training) for net, xk in zip(self.networks, x, strict=True)], {}

    def get_config(self) -> dict[str, Any]:
        network = template_config(self.networks[0], self._template_name)
        return {**super().get_config(), "network": network}
