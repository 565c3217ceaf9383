"""From a dict of raw features to the model's input vector, driven by the schema.

- categorical: a vocabulary lookup (index 0 is out-of-vocabulary, "" included) or a hash of the
  string into `num_buckets` (bucket 0 is reserved for "" = missing), then an embedding;
- numeric: NaN -> the feature's default, optional transform (log1p, sqrt; negatives clipped to 0),
  then normalization by a mean and variance adapted from training data and saved with the model;
- sequence: a [B, L] string tensor padded with "", truncated to `max_length`, looked up like a
  categorical (optionally in the table of the categorical it shares, e.g. recent_items -> item_id),
  and pooled over the non-padding positions: `pooling: mean` averages them; `pooling: attention`
  weights each by its relevance to the candidate item's embedding (DIN's target attention, see
  `ranker.layers.attention`), so the pooled vector depends on the item being scored.

The output is the concatenation, in schema order, of embeddings and normalized numerics; a sequence
contributes its table's embedding_dim under either pooling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ranker.errors import FeatureError
from ranker.keras_compat import keras, tf
from ranker.layers.attention import TargetAttention
from ranker.schema import Feature, attention_query, table_owner


@keras.utils.register_keras_serializable(package="mtrank")
class FeatureInputs(keras.layers.Layer):
    """Encodes raw features (see module docstring) into one [B, output_dim] tensor."""

    def __init__(
        self,
        features: list[Feature] | list[dict[str, Any]],
        embedding_l2: float = 0.0,
        vocabulary_embedding_l2: float = 0.0,
        **kwargs: Any,
    ) -> None:
        # raw numerics stay float32 until normalized, also under a mixed-precision policy
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        parsed = [f if isinstance(f, Feature) else Feature.model_validate(f) for f in features]
        if not parsed:
            raise ValueError("FeatureInputs needs at least one feature, got []")
        names = [f.name for f in parsed]
        if len(set(names)) != len(names):
            raise ValueError(f"FeatureInputs feature names must be unique, got {names}")
        for key, value in (
            ("embedding_l2", embedding_l2),
            ("vocabulary_embedding_l2", vocabulary_embedding_l2),
        ):
            if value < 0:
                raise ValueError(f"FeatureInputs {key} must be >= 0, got {value}")
        # hashed tables (ids: many rows, few examples each) memorise; vocabulary tables are small
        self.embedding_l2 = float(embedding_l2)
        self.vocabulary_embedding_l2 = float(vocabulary_embedding_l2)
        self.features = parsed
        self.lookups: dict[str, keras.layers.Layer] = {}
        self.embeddings: dict[str, keras.layers.Embedding] = {}
        for feature in parsed:
            if not feature.is_embedded or feature.shared_embedding is not None:
                continue
            if feature.vocabulary is not None:
                self.lookups[feature.name] = keras.layers.StringLookup(
                    vocabulary=feature.vocabulary,
                    num_oov_indices=1,
                    mask_token=None,
                    name=f"{feature.name}_lookup",
                )
            l2 = self.embedding_l2 if feature.vocabulary is None else self.vocabulary_embedding_l2
            self.embeddings[feature.name] = keras.layers.Embedding(
                feature.table_size,
                feature.embedding_dim,
                embeddings_regularizer=keras.regularizers.l2(l2) if l2 else None,
                name=f"{feature.name}_embedding",
            )
        self.owners = {f.name: table_owner(f, parsed) for f in parsed if f.is_embedded}
        # sequence name -> the item categorical whose embedding queries its attention pooling
        self.queries = {
            f.name: attention_query(f, parsed) for f in parsed if f.pooling == "attention"
        }
        self.attention = {name: TargetAttention(name=f"{name}_attention") for name in self.queries}
        self.numeric = [f for f in parsed if f.type == "numeric"]

    # ---- weights -------------------------------------------------------------------------------

    def build(self, input_shape: Any = None) -> None:
        self.means: dict[str, tf.Variable] = {}
        self.variances: dict[str, tf.Variable] = {}
        for feature in self.numeric:
            if feature.normalize:
                self.means[feature.name] = self._statistic(f"{feature.name}_mean", "zeros")
                self.variances[feature.name] = self._statistic(f"{feature.name}_variance", "ones")
        super().build(input_shape)

    def _statistic(self, name: str, initializer: str) -> tf.Variable:
        """A saved, non-trainable float32 scalar, never autocast under mixed precision."""
        return self.add_weight(
            name=name,
            shape=(),
            initializer=initializer,
            trainable=False,
            dtype="float32",
            experimental_autocast=False,
        )

    def adapt(self, batches: Iterable[Mapping[str, Any]]) -> None:
        """Sets each normalized numeric feature's mean and variance from raw training batches."""
        if not self.built:
            self.build()
        count = {name: 0.0 for name in self.means}
        total = {name: 0.0 for name in self.means}
        squares = {name: 0.0 for name in self.means}
        for batch in batches:
            for feature in self.numeric:
                if feature.name not in self.means:
                    continue
                values = self._numeric(feature, batch).numpy().astype(np.float64)
                count[feature.name] += values.size
                total[feature.name] += values.sum()
                squares[feature.name] += np.square(values).sum()
        for name in self.means:
            if count[name] == 0:
                raise ValueError(f"FeatureInputs.adapt saw no values of numeric feature {name!r}")
            mean = total[name] / count[name]
            variance = max(squares[name] / count[name] - mean * mean, 0.0)
            self.means[name].assign(mean)
            self.variances[name].assign(variance if variance > 1e-12 else 1.0)

    # ---- encoding ------------------------------------------------------------------------------

    @property
    def output_dim(self) -> int:
        dims = 0
        for feature in self.features:
            if feature.type == "numeric":
                dims += 1
            else:
                dims += self.owners[feature.name].embedding_dim
        return dims

    def call(self, features: Mapping[str, Any]) -> tf.Tensor:
        missing = [f.name for f in self.features if f.name not in features]
        if missing:
            raise FeatureError(
                f"missing feature {missing[0]!r}"
                + (f" (and {len(missing) - 1} more: {missing[1:]})" if len(missing) > 1 else "")
            )
        parts = []
        for feature in self.features:
            if feature.type == "numeric":
                value = self._numeric(feature, features)
                if feature.name in self.means:
                    value = (value - self.means[feature.name]) * tf.math.rsqrt(
                        self.variances[feature.name] + 1e-6
                    )
                parts.append(tf.expand_dims(value, -1))
            elif feature.type == "categorical":
                parts.append(self._embedded(feature, features))
            else:
                parts.append(self._pooled_sequence(feature, features))
        return tf.concat([tf.cast(p, self.compute_dtype) for p in parts], axis=-1)

    def _numeric(self, feature: Feature, features: Mapping[str, Any]) -> tf.Tensor:
        value = tf.convert_to_tensor(features[feature.name])
        if value.dtype == tf.string or value.dtype == tf.bool:
            raise FeatureError(
                f"feature {feature.name!r}: expected numbers, got a {value.dtype.name} tensor"
            )
        value = tf.reshape(tf.cast(value, tf.float32), [-1])
        default = float(feature.default) if feature.default is not None else 0.0
        value = tf.where(tf.math.is_nan(value), tf.fill(tf.shape(value), default), value)
        if feature.transform == "log1p":
            value = tf.math.log1p(tf.maximum(value, 0.0))
        elif feature.transform == "sqrt":
            value = tf.sqrt(tf.maximum(value, 0.0))
        return value

    def _embedded(self, feature: Feature, features: Mapping[str, Any]) -> tf.Tensor:
        ids = self._ids(feature, _strings(feature, features[feature.name], rank=1))
        return self.embeddings[feature.name](ids)

    def _ids(self, feature: Feature, strings: tf.Tensor) -> tf.Tensor:
        owner = self.owners[feature.name]
        if owner.name in self.lookups:
            return self.lookups[owner.name](strings)
        assert owner.num_buckets is not None
        hashed = tf.strings.to_hash_bucket_fast(strings, max(owner.num_buckets - 1, 1)) + 1
        return tf.where(strings == "", tf.zeros_like(hashed), hashed)

    def _pooled_sequence(self, feature: Feature, features: Mapping[str, Any]) -> tf.Tensor:
        assert feature.max_length is not None
        strings = _strings(feature, features[feature.name], rank=2)[:, : feature.max_length]
        table = self.embeddings[self.owners[feature.name].name]
        vectors = table(self._ids(feature, strings))  # [B, L, D]
        if feature.name in self.attention:
            query = self._embedded(self.queries[feature.name], features)  # [B, D]
            return self.attention[feature.name](vectors, query, strings != "")
        mask = tf.cast(strings != "", vectors.dtype)[..., tf.newaxis]
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        return tf.reduce_sum(vectors * mask, axis=1) / count

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "features": [f.model_dump(mode="json", exclude_defaults=True) for f in self.features],
            "embedding_l2": self.embedding_l2,
            "vocabulary_embedding_l2": self.vocabulary_embedding_l2,
        }


def _strings(feature: Feature, raw: Any, rank: int) -> tf.Tensor:
    """The raw value as a string tensor of the given rank; integers become their decimal strings."""
    value = raw if isinstance(raw, tf.Tensor | tf.RaggedTensor) else tf.convert_to_tensor(raw)
    if value.dtype.is_integer:
        value = tf.strings.as_string(value)
    elif value.dtype != tf.string:
        raise FeatureError(
            f"feature {feature.name!r}: expected strings (or integers) for a {feature.type} feature, "
            f"got a {value.dtype.name} tensor"
        )
    if isinstance(value, tf.RaggedTensor):
        value = value.to_tensor(default_value="")
    if rank == 1:
        return tf.reshape(value, [-1])
    if value.shape.rank != 2:
        raise FeatureError(
            f"feature {feature.name!r}: a sequence needs a 2-D [batch, length] tensor, "
            f"got rank {value.shape.rank}"
        )
    return value
