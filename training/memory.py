"""Splits held in memory: read once through the streaming reader, then batched by gathers.

The streaming reader (`training.data.make_dataset`) decodes every batch again each epoch: on two
cores that work competes with the training step itself (the wide table of
benchmarks/datasets.py: 150-200k rows/s for the reader alone, 5-7 ms of every 1024-row batch). A
split that fits in `memory_budget` bytes is read once into tensors instead; each epoch then draws
a fresh permutation of all rows (a full shuffle, where the stream shuffles within windows) and
every batch is one `tf.gather` per column.

The columns are held encoded (`FeatureInputs.encode`: the categoricals' rows in their fused
tables as int32 blocks, the numerics as one float32 block), computed once when the split is read:
a batch is then a few gathers of numbers instead of one per raw column, strings included, and the
training step makes no string lookups. The model takes them as it takes raw features.

`estimated_bytes` sizes a split from its schema before reading it: 4 bytes a number, 32 a string
(TensorFlow's string element plus a short value), sequences `max_length` strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ranker  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ranker.keras_compat import tf
from ranker.layers.inputs import FeatureInputs
from ranker.schema import Schema
from training.data import EntityTables, read_tensors, reader_errors

STRING_BYTES = 32


def estimated_bytes(schema: Schema, rows: int) -> int:
    """About how much memory `rows` rows of the schema's features and labels take as tensors."""
    per_row = 4 * len(schema.label_columns)
    for feature in schema.features:
        if feature.type == "numeric":
            per_row += 4
        elif feature.type == "categorical":
            per_row += STRING_BYTES
        else:
            per_row += STRING_BYTES * (feature.max_length or 1)
    return per_row * rows


def memory_dataset(
    path: str | Path,
    schema: Schema,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None,
    tables: EntityTables | None = None,
) -> tf.data.Dataset:
    """`(features, labels)` batches of a split read once into memory: a new permutation of all
    rows every epoch when `shuffle`, file order otherwise; the last batch may be smaller."""
    with reader_errors():
        features, labels = read_tensors(path, schema, tables=tables)
    columns = (FeatureInputs(schema.features).encode(features), labels)
    rows = int(next(iter(labels.values())).shape[0])

    def gather(indices: tf.Tensor) -> Any:
        return tf.nest.map_structure(lambda column: tf.gather(column, indices), columns)

    indices = tf.data.Dataset.range(rows)
    if shuffle:  # the buffer holds every row index: a full permutation, new each epoch
        indices = indices.shuffle(rows, seed=seed, reshuffle_each_iteration=True)
    dataset = indices.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
