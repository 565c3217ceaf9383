"""Export a trained RankingModel as a SavedModel that takes raw features and returns named scores.

The `serving_default` signature takes one tensor per raw feature, named as in the schema (1-D
`string` for categoricals, 1-D `float32` for numerics, 2-D `string` [batch, length] padded with ""
for sequences) and returns one 1-D `float32` tensor per task and product. Only the model's variables
are saved (no optimizer slots), and the result loads with plain TensorFlow: no mtrank, no TFRS.
"""

from __future__ import annotations

from pathlib import Path

from ranker.keras_compat import tf
from ranker.model import RankingModel
from ranker.schema import Feature, Schema

SIGNATURE = "serving_default"


def input_spec(feature: Feature) -> tf.TensorSpec:
    """The signature's tensor spec for one raw feature."""
    if feature.type == "numeric":
        return tf.TensorSpec([None], tf.float32, name=feature.name)
    if feature.type == "sequence":
        return tf.TensorSpec([None, None], tf.string, name=feature.name)
    return tf.TensorSpec([None], tf.string, name=feature.name)


def signature_specs(schema: Schema) -> dict[str, tf.TensorSpec]:
    return {feature.name: input_spec(feature) for feature in schema.features}


class _Servable(tf.Module):
    """Tracks only the layers inference uses, so optimizer slots, metrics and loss weights stay out."""

    def __init__(self, model: RankingModel) -> None:
        super().__init__(name="mtrank_servable")
        self.feature_inputs = list(model.feature_inputs)
        self.backbone = model.backbone
        self.towers = list(model.towers)


def export_saved_model(model: RankingModel, path: str | Path) -> Path:
    """Writes the SavedModel to `path` (a new or empty directory) and returns it."""
    path = Path(path)
    output_names = list(model.schema.output_names)

    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        scores = model(features, training=False)
        return {name: tf.cast(scores[name], tf.float32) for name in output_names}

    signature = tf.function(serve, input_signature=[signature_specs(model.schema)])
    servable = _Servable(model)
    tf.saved_model.save(
        servable, str(path), signatures={SIGNATURE: signature.get_concrete_function()}
    )
    return path
