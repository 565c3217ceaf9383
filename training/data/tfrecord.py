"""TFRecord files of tf.train.Examples read into batches, with the Parquet/CSV readers' checks.

Every column is checked up front from the file's first record (present, of a kind its feature
can take); labels are checked in the graph, per batch, with the same one-line `DataError`
messages (`reader_errors()` unwraps them). `Dataset.shuffle(shuffle_buffer)` shuffles records;
a shard keeps every num_shards-th record. Files are written by `training.data.tfrecord_writer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ranker.keras_compat import tf
from ranker.schema import Feature, Schema
from training.data.errors import DataError
from training.data.options import ReadOptions


def tfrecord_dataset(path: Path, schema: Schema, options: ReadOptions) -> tf.data.Dataset:
    """Batches parsed from a file of tf.train.Examples with a spec built from the schema."""
    labels = list(dict.fromkeys(schema.label_columns)) if options.labels else []
    _check_tfrecord(path, schema, labels)
    spec = _tfrecord_spec(schema, labels)
    records = tf.data.TFRecordDataset(str(path))
    if options.num_shards > 1:
        records = records.shard(options.num_shards, options.shard_index)
    if options.shuffle:
        records = records.shuffle(options.shuffle_buffer, seed=options.seed)
    batches = records.batch(options.batch_size, drop_remainder=options.drop_remainder)
    binary = [t.label for t in schema.tasks if t.type == "binary" and t.label in labels]

    def parse(serialized: Any) -> Any:
        parsed = tf.io.parse_example(serialized, spec)
        features = {f.name: _parsed_feature(f, parsed[f.name]) for f in schema.features}
        if not labels:
            return features
        for label in labels:
            _assert_label(parsed[label], label, label in binary, path)
        return features, {label: parsed[label] for label in labels}

    dataset = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if options.repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


def _tfrecord_spec(schema: Schema, labels: Sequence[str]) -> dict[str, Any]:
    """The parse spec: fixed-length categorical/numeric with fills, ragged sequences, labels."""
    spec: dict[str, Any] = {}
    for feature in schema.features:
        if feature.type == "numeric":
            fill = float(feature.missing_value)  # type: ignore[arg-type]
            spec[feature.name] = tf.io.FixedLenFeature([], tf.float32, default_value=fill)
        elif feature.type == "categorical":
            spec[feature.name] = tf.io.FixedLenFeature([], tf.string, default_value="")
        else:
            spec[feature.name] = tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64)
    for label in labels:
        spec[label] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def _parsed_feature(feature: Feature, value: Any) -> Any:
    if feature.type == "numeric":
        fill = tf.constant(feature.missing_value, tf.float32)
        return tf.where(tf.math.is_nan(value), fill, value)
    if feature.type == "sequence":
        return value.to_tensor(default_value="", shape=[None, feature.max_length])
    return value


def _assert_label(values: Any, name: str, binary: bool, path: Path) -> None:
    """Graph-side checks with the same one-line messages as the Parquet/CSV readers."""
    tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(values)),
        [f"DataError: {path}: label column {name!r} has a null or NaN value"],
    )
    if binary:
        ok = tf.reduce_all((values == 0.0) | (values == 1.0))
        message = f"DataError: {path}: label column {name!r} has a value outside {{0, 1}}"
        tf.debugging.Assert(ok, [message])


def _check_tfrecord(path: Path, schema: Schema, labels: Sequence[str]) -> None:
    """Up-front checks from the first record: the file is not empty and holds every column."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    with tf.init_scope():  # eager also where the dataset function is traced (parameter servers)
        first = next(iter(tf.data.TFRecordDataset(str(path)).take(1)), None)
    if first is None:
        raise DataError(f"{path}: the file has no rows")
    example = tf.train.Example.FromString(first.numpy())
    present = example.features.feature
    kinds = {"numeric": "float_list", "categorical": "bytes_list", "sequence": "bytes_list"}
    for feature in schema.features:
        if feature.name not in present:
            raise DataError(f"{path}: column {feature.name!r} is missing ({feature.type} feature)")
        kind = present[feature.name].WhichOneof("kind")
        if kind not in (kinds[feature.type], None):
            raise DataError(
                f"{path}: column {feature.name!r} holds {kind}, which a {feature.type} feature "
                f"cannot take (expected {kinds[feature.type]})"
            )
    for label in labels:
        if label not in present:
            raise DataError(f"{path}: column {label!r} is missing (label)")
