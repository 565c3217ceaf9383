"""`write_tfrecord`: a Parquet or CSV split, joined with its entity tables, as tf.train.Examples.

The records hold the model-boundary form the readers yield, so `training.data.tfrecord` reads a
written file back as the same batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ranker.keras_compat import tf
from ranker.schema import Schema
from training.data.dataset import make_dataset, to_numpy
from training.data.encoding import Arrays
from training.data.entity_tables import EntityTables
from training.data.options import ReadOptions


def write_tfrecord(
    source: str | Path,
    destination: str | Path,
    schema: Schema,
    *,
    labels: bool = True,
    tables: EntityTables | None = None,
) -> int:
    """Convert a Parquet or CSV split (joined with its entity tables) to tf.train.Examples.

    Each Example holds every feature in its model-boundary form (categorical: one bytes value;
    numeric: one float; sequence: its non-empty items as bytes) and each label as one float.
    Returns the number of records written.
    """
    options = ReadOptions(batch_size=8192, labels=labels)
    dataset = make_dataset(source, schema, options, tables=tables)
    written = 0
    with tf.io.TFRecordWriter(str(destination)) as writer:
        for element in dataset:
            features, label_values = element if labels else (element, {})
            arrays = to_numpy({**features, **label_values})
            for i in range(len(arrays[schema.features[0].name])):
                writer.write(_example(schema, arrays, i).SerializeToString())
                written += 1
    return written


def _example(schema: Schema, arrays: Arrays, row: int) -> Any:
    """One row of model-boundary arrays as a tf.train.Example."""
    feature = tf.train.Feature
    out: dict[str, Any] = {}
    for spec in schema.features:
        value = arrays[spec.name][row]
        if spec.type == "numeric":
            out[spec.name] = feature(float_list=tf.train.FloatList(value=[value]))
        elif spec.type == "categorical":
            out[spec.name] = feature(bytes_list=tf.train.BytesList(value=[value]))
        else:
            items = [v for v in value if v]
            out[spec.name] = feature(bytes_list=tf.train.BytesList(value=items))
    for label in schema.label_columns:
        if label in arrays:
            out[label] = feature(float_list=tf.train.FloatList(value=[arrays[label][row]]))
    return tf.train.Example(features=tf.train.Features(feature=out))
