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

The output is the concatenation of the categoricals' embeddings (grouped by table, schema order
within a table), the normalized numerics and the pooled sequences (each in schema order); a sequence
contributes its table's embedding_dim under either pooling.

Tables are fused: every feature that owns a table is a block of rows in one table per embedding_dim
and kind (hashed or vocabulary, which take different L2), so a batch makes one gather per table.
`placement[owner]` gives its (table, first row).

`encode` is the first, weightless half of `call`: the categoricals' rows per fused table and the
numerics as one block, from raw features. `call` takes those in place of the raw features (under
the `ENCODED` keys `encode` returns), so a training pipeline can compute them once for data it
holds in memory (`training.memory`) while the model, and so its export, still takes raw features.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ranker.errors import FeatureError
from ranker.keras_compat import keras, tf
from ranker.layers.attention import TargetAttention
from ranker.schema import Feature, attention_query, table_owner

# `encode`'s keys: ENCODED + a fused table's name (its rows) or + "numeric" (the numeric block)
ENCODED = "__encoded__"
NUMERIC_BLOCK = f"{ENCODED}numeric"


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
        self.owners = {f.name: table_owner(f, parsed) for f in parsed if f.is_embedded}
        self.lookups: dict[str, keras.layers.Layer] = {}
        for feature in parsed:
            if feature.vocabulary is not None and feature.shared_embedding is None:
                self.lookups[feature.name] = keras.layers.StringLookup(
                    vocabulary=feature.vocabulary,
                    num_oov_indices=1,
                    mask_token=None,
                    name=f"{feature.name}_lookup",
                )
        self.placement, self.embeddings = self._fused_tables(parsed)
        # sequence name -> the item categorical whose embedding queries its attention pooling
        self.queries = {
            f.name: attention_query(f, parsed) for f in parsed if f.pooling == "attention"
        }
        self.attention = {name: TargetAttention(name=f"{name}_attention") for name in self.queries}
        self.categorical = [f for f in parsed if f.type == "categorical"]
        self.numeric = [f for f in parsed if f.type == "numeric"]
        self.sequences = [f for f in parsed if f.type == "sequence"]
        # fused table (in `embeddings` order) -> its categoricals' names in schema order: the
        # columns of its rows
        by_table: dict[str, list[str]] = {}
        for feature in self.categorical:
            table, _ = self.placement[self.owners[feature.name].name]
            by_table.setdefault(table, []).append(feature.name)
        self.table_features = {t: by_table[t] for t in self.embeddings if t in by_table}

    def _fused_tables(
        self, features: list[Feature]
    ) -> tuple[dict[str, tuple[str, int]], dict[str, keras.layers.Embedding]]:
        """One embedding table per (embedding_dim, hashed or vocabulary) group of features that own
        a table, each feature a block of rows: {owner: (table name, first row)}, {name: table}.

        A step then makes one gather and one optimizer update per group instead of one per
        feature: on the 33-categorical wide table of benchmarks/datasets.py, MMoE's step at batch
        1024 went from 21 to 19 ms (one in-process comparison).
        """
        placement: dict[str, tuple[str, int]] = {}
        rows: dict[str, int] = {}
        l2: dict[str, float] = {}
        dims: dict[str, int] = {}
        for feature in features:
            if not feature.is_embedded or feature.shared_embedding is not None:
                continue
            hashed = feature.vocabulary is None
            name = f"{'hashed' if hashed else 'vocabulary'}_embeddings_{feature.embedding_dim}d"
            placement[feature.name] = (name, rows.get(name, 0))
            rows[name] = rows.get(name, 0) + feature.table_size
            l2[name] = self.embedding_l2 if hashed else self.vocabulary_embedding_l2
            dims[name] = feature.embedding_dim
        tables = {
            name: keras.layers.Embedding(
                rows[name],
                dims[name],
                embeddings_regularizer=keras.regularizers.l2(l2[name]) if l2[name] else None,
                name=name,
            )
            for name in rows
        }
        return placement, tables

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
        count = total = squares = np.zeros(len(self.numeric))
        for batch in batches:
            if not self.numeric:
                break
            values = self._numeric_values(batch).numpy().astype(np.float64)  # [B, N]
            count = count + len(values)
            total = total + values.sum(axis=0)
            squares = squares + np.square(values).sum(axis=0)
        for k, feature in enumerate(self.numeric):
            if feature.name not in self.means:
                continue
            if count[k] == 0:
                raise ValueError(
                    f"FeatureInputs.adapt saw no values of numeric feature {feature.name!r}"
                )
            mean = total[k] / count[k]
            variance = max(squares[k] / count[k] - mean * mean, 0.0)
            self.means[feature.name].assign(mean)
            self.variances[feature.name].assign(variance if variance > 1e-12 else 1.0)

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
        missing = [name for name in self._raw_names(features) if name not in features]
        if missing:
            raise FeatureError(
                f"missing feature {missing[0]!r}"
                + (f" (and {len(missing) - 1} more: {missing[1:]})" if len(missing) > 1 else "")
            )
        blocks, queries = self._embedded_categoricals(features)
        parts = list(blocks)
        if self.numeric:
            values = features.get(NUMERIC_BLOCK)
            parts.append(
                self._normalized(self._numeric_values(features) if values is None else values)
            )
        for feature in self.sequences:
            parts.append(self._pooled_sequence(feature, features, queries))
        return tf.concat([tf.cast(p, self.compute_dtype) for p in parts], axis=-1)

    def encode(self, features: Mapping[str, Any]) -> dict[str, Any]:
        """What `call` reads, half computed from raw features: the categoricals' rows ([B, F]
        int32 per fused table, under ENCODED + the table's name), the numerics ([B, N] float32
        under NUMERIC_BLOCK: NaN filled and transformed, normalized later by `call`) and the
        sequences as they are. `call(encode(x))` equals `call(x)`.

        On benchmarks/datasets.py's wide table (33 categoricals in 2 tables, 7 numerics), a
        pipeline that holds encoded rows gathers 3 numeric blocks a batch instead of 40 columns,
        33 of them strings, and the step makes no string lookups: one MMoE epoch at batch 1024
        trained at 98k -> 130k examples/s (same process, same data).
        """
        encoded: dict[str, Any] = {
            f"{ENCODED}{table}": tf.cast(rows, tf.int32)
            for table, rows in self._table_rows(features).items()
        }
        if self.numeric:
            encoded[NUMERIC_BLOCK] = self._numeric_values(features)
        encoded.update({f.name: features[f.name] for f in self.sequences})
        return encoded

    def _raw_names(self, features: Mapping[str, Any]) -> list[str]:
        """The raw features `call` reads: all of them, less those `encode`d ones stand in for."""
        covered = {
            name
            for table, names in self.table_features.items()
            if f"{ENCODED}{table}" in features
            for name in names
        }
        if NUMERIC_BLOCK in features:
            covered.update(f.name for f in self.numeric)
        return [f.name for f in self.features if f.name not in covered]

    def _table_rows(
        self, features: Mapping[str, Any], tables: Iterable[str] | None = None
    ) -> dict[str, tf.Tensor]:
        """{fused table: the [B, F] rows of its categoricals}, from raw features; every table, or
        those in `tables`."""
        by_name = {f.name: f for f in self.categorical}
        return {
            table: tf.stack(
                [
                    self._rows(by_name[name], _strings(by_name[name], features[name], rank=1))
                    for name in self.table_features[table]
                ],
                axis=1,
            )
            for table in (self.table_features if tables is None else tables)
        }

    def _embedded_categoricals(
        self, features: Mapping[str, Any]
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        """The categoricals' embeddings as one [B, F * D] block per fused table (one gather each,
        features in schema order), and the [B, D] embedding of each attention query feature;
        a table's rows are taken from `encode`'s output where the features carry it."""
        raw = [table for table in self.table_features if f"{ENCODED}{table}" not in features]
        rows = self._table_rows(features, raw)
        rows.update({t: features[f"{ENCODED}{t}"] for t in self.table_features if t not in rows})
        wanted = {query.name for query in self.queries.values()}
        blocks, queries = [], {}
        for table, names in self.table_features.items():
            vectors = self.embeddings[table](rows[table])
            dim = self.embeddings[table].output_dim
            blocks.append(tf.reshape(vectors, [-1, len(names) * dim]))
            for k, name in enumerate(names):
                if name in wanted:
                    queries[name] = vectors[:, k, :]
        return blocks, queries

    def _numeric_values(self, features: Mapping[str, Any]) -> tf.Tensor:
        """The numeric features as one [B, N] float32 block, NaN filled and transformed (whole
        columns at a time: a few ops for all of them, not a dozen per feature)."""
        columns = []
        for feature in self.numeric:
            value = tf.convert_to_tensor(features[feature.name])
            if value.dtype == tf.string or value.dtype == tf.bool:
                raise FeatureError(
                    f"feature {feature.name!r}: expected numbers, got a {value.dtype.name} tensor"
                )
            columns.append(tf.reshape(tf.cast(value, tf.float32), [-1]))
        values = tf.stack(columns, axis=1)
        defaults = [float(f.default) if f.default is not None else 0.0 for f in self.numeric]
        values = tf.where(tf.math.is_nan(values), tf.constant([defaults]), values)
        for transform, apply in (("log1p", tf.math.log1p), ("sqrt", tf.sqrt)):
            chosen = [f.transform == transform for f in self.numeric]
            if any(chosen):
                changed = apply(tf.maximum(values, 0.0))  # negatives clipped to 0
                values = tf.where(tf.constant([chosen]), changed, values)
        return values

    def _normalized(self, values: tf.Tensor) -> tf.Tensor:
        """[B, N] numerics minus their adapted mean, over their standard deviation (if normalized)."""
        if not self.means:
            return values
        zero, one = tf.constant(0.0), tf.constant(1.0)
        mean = tf.stack([self.means.get(f.name, zero) for f in self.numeric])
        variance = tf.stack([self.variances.get(f.name, one) for f in self.numeric])
        normalized = tf.constant([f.name in self.means for f in self.numeric])
        scale = tf.where(normalized, tf.math.rsqrt(variance + 1e-6), one)
        return (values - mean) * scale

    def _rows(self, feature: Feature, strings: tf.Tensor) -> tf.Tensor:
        """The rows of `strings` in the fused table of the feature that owns their embedding."""
        owner = self.owners[feature.name]
        first = self.placement[owner.name][1]
        if owner.name in self.lookups:
            ids = self.lookups[owner.name](strings)
        else:
            assert owner.num_buckets is not None
            hashed = tf.strings.to_hash_bucket_fast(strings, max(owner.num_buckets - 1, 1)) + 1
            ids = tf.where(strings == "", tf.zeros_like(hashed), hashed)
        return ids + first if first else ids

    def _pooled_sequence(
        self, feature: Feature, features: Mapping[str, Any], queries: Mapping[str, tf.Tensor]
    ) -> tf.Tensor:
        assert feature.max_length is not None
        strings = _strings(feature, features[feature.name], rank=2)[:, : feature.max_length]
        table = self.embeddings[self.placement[self.owners[feature.name].name][0]]
        vectors = table(self._rows(feature, strings))  # [B, L, D]
        if feature.name in self.attention:
            query = queries[self.queries[feature.name].name]  # [B, D]
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
