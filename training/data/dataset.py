"""`make_dataset` and the read helpers built on it: a split as batches, tensors, arrays, columns.

Every dataset yields `(features, labels)` batches (or `features` alone with `labels=False`):
`features[name]` for every schema feature in the raw form the model boundary takes (see
`training.data.encoding`), `labels[column]` for every task label column, float32 [batch].

Speed (Parquet and CSV). The file is streamed in chunks of `chunk_rows` rows
(`training.data.sources`). Each chunk is converted with vectorized pyarrow and numpy
(`training.data.encoding`), crosses into TensorFlow through `Dataset.from_generator`
(`training.data.chunks`), is decoded by a parallel `map` (gathers, padding) and cut into batches
by `rebatch`. No Python runs per row. TFRecord files are parsed by `training.data.tfrecord`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ranker.keras_compat import tf
from ranker.schema import Schema
from training.data.chunks import chunk_generator
from training.data.encoding import Arrays, Tensors
from training.data.entity_tables import EntityTables
from training.data.errors import DataError
from training.data.formats import file_format
from training.data.options import ReadOptions
from training.data.plan import make_plan
from training.data.sources import open_source
from training.data.tfrecord import tfrecord_dataset


def make_dataset(
    path: str | Path,
    schema: Schema,
    options: ReadOptions | None = None,
    *,
    tables: EntityTables | None = None,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `(features, labels)` batches (features only without labels).

    The format comes from the suffix (.parquet/.pq, .csv, .tfrecord). `tables` defaults to the
    user and item tables beside `path`, loaded only if the file lacks some entity feature.
    """
    path = Path(path)
    options = options or ReadOptions()
    if file_format(path) == "tfrecord":
        return tfrecord_dataset(path, schema, options)
    source = open_source(path)
    plan = make_plan(source, schema, options.labels, tables)
    chunks = tf.data.Dataset.from_generator(
        chunk_generator(source, plan, options), output_signature=plan.signature()
    )
    dataset = chunks.map(plan.decode, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.rebatch(options.batch_size, drop_remainder=options.drop_remainder)
    dataset = dataset.map(plan.join, num_parallel_calls=tf.data.AUTOTUNE)
    if options.repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


def read_tensors(
    path: str | Path, schema: Schema, *, labels: bool = True, tables: EntityTables | None = None
) -> tuple[Tensors, Tensors]:
    """A whole (small) split as in-memory tensors: `(features, labels)`, labels {} if not wanted."""
    options = ReadOptions(batch_size=1 << 20, labels=labels)
    parts: list[Any] = list(make_dataset(path, schema, options, tables=tables))
    if labels:
        return _concat([p[0] for p in parts]), _concat([p[1] for p in parts])
    return _concat(parts), {}


def read_arrays(
    path: str | Path, schema: Schema, *, labels: bool = True, tables: EntityTables | None = None
) -> tuple[Arrays, Arrays]:
    """A whole (small) split as numpy arrays (strings as bytes objects): `(features, labels)`."""
    features, label_tensors = read_tensors(path, schema, labels=labels, tables=tables)
    return to_numpy(features), to_numpy(label_tensors)


def read_columns(path: str | Path, columns: Sequence[str]) -> Arrays:
    """Raw columns of a Parquet or CSV file as numpy arrays (e.g. labels, user ids, p_click)."""
    source = open_source(Path(path))
    for column in columns:
        source.check_column(column, "requested")
    batches = list(source.batches(list(columns), None, 0, 1, 1 << 16))
    table = pa.Table.from_batches(batches, schema=batches[0].schema)
    return {c: table.column(c).to_numpy() for c in columns}


def column_names(path: str | Path) -> list[str]:
    """The columns of a Parquet or CSV file (from its metadata or header)."""
    return open_source(Path(path)).columns


def count_rows(path: str | Path) -> int:
    """Rows in a split: Parquet from its metadata; CSV and TFRecord by one pass over the file."""
    path = Path(path)
    if file_format(path) == "tfrecord":
        if not path.exists():
            raise DataError(f"{path}: no such file")
        return int(tf.data.TFRecordDataset(str(path)).reduce(np.int64(0), lambda n, _: n + 1))
    source = open_source(path)
    if source.num_rows is not None:
        return source.num_rows
    first = source.columns[:1]
    return sum(batch.num_rows for batch in source.batches(first, None, 0, 1, 1 << 16))


def to_numpy(tensors: Tensors) -> Arrays:
    """Each tensor's value as a numpy array (strings as bytes objects)."""
    return {name: value.numpy() for name, value in tensors.items()}


def _concat(parts: Sequence[Tensors]) -> Tensors:
    if not parts:
        return {}
    return {name: tf.concat([p[name] for p in parts], axis=0) for name in parts[0]}
