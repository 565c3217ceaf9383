"""ESMM: conditioned tasks (CVR) learned over the entire impression space through their product.

From "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click Conversion
Rate" (Ma et al., SIGIR 2018). pCTCVR = pCTR * pCVR; the losses are on CTR (label click) and CTCVR
(label click * conversion) over all impressions, so pCVR is never fit on the clicked sample alone.
The towers sit on a configurable base: shared_bottom (the paper's shared embeddings) by default, or
any registered architecture whose tasks read one shared input and learn on their own (mmoe, ple,
home, ...; not single_task or stem, which embed per task, nor another entire-space model).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import keras, tf
from ranker.registry import get, register


class ESMMConfig(ArchitectureConfig):
    base: str = "shared_bottom"
    base_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base")
    @classmethod
    def _check_base(cls, name: str) -> str:
        base = get(name)  # an unknown name: the registry's ValueError lists the known ones
        if base.separate_inputs or base.entire_space:
            raise ValueError(f"{name!r} cannot be a base (it embeds per task or is entire-space)")
        return name


@register("esmm")
class ESMM(Backbone):
    """The base's representations, unchanged; what makes ESMM is `entire_space` (see the model)."""

    Config = ESMMConfig
    entire_space: ClassVar[bool] = True

    def __init__(self, num_tasks: int, base: Backbone | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.base = keras.layers.deserialize(base) if isinstance(base, dict) else base
        if self.base.separate_inputs:
            raise ValueError(
                f"ESMM needs a base with shared inputs, got {type(self.base).__name__}"
            )

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> ESMM:
        return cls(num_tasks, base=cls.base_from_hparams(hp, num_tasks))

    @staticmethod
    def base_from_hparams(hp: Any, num_tasks: int) -> Backbone:
        """The base network of `hp.base`, with the shared settings and `hp.base_config`."""
        raw = {"tower_units": hp.tower_units, "activation": hp.activation, "dropout": hp.dropout}
        raw.update(hp.base_config)
        return get(hp.base).from_config_dict(raw, num_tasks)

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        return self.base(x, training=training, gates=True)  # type: ignore[no-any-return]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "base": keras.layers.serialize(self.base)}
