"""Training data readers: Parquet, CSV and TFRecord files into `tf.data` batches, per the schema.

Every dataset yields `(features, labels)` batches (or `features` alone with `labels=False`):

* `features[name]` for every schema feature, in the raw form the model boundary takes: categorical
  values as tf.string [batch] (integers converted like `str()`), numeric values as float32 [batch],
  sequences as tf.string [batch, max_length] padded with "" (longer lists keep their first
  max_length items; empty strings inside a list are dropped).
* `labels[column]` for every task label column, float32 [batch].

Where each part lives (this package re-exports the names other packages use):

* `dataset`: `make_dataset` and the helpers on it (`read_tensors`, `read_arrays`,
  `read_columns`, `column_names`, `count_rows`);
* `options`: `ReadOptions` (batching, shuffling, repetition, sharding, labels);
* `errors`: `DataError` (one line naming file and column) and `reader_errors()`;
* `formats`: the file suffixes a reader takes (`file_format`);
* `sources`: Parquet and CSV files streamed as pyarrow record batches, and how they shard;
* `entity_tables`: the user and item tables joined in by key (`EntityTables`);
* `plan`: which columns of a file come from where, and how a chunk decodes;
* `encoding`: Arrow columns into the model's features and labels, with the documented fills;
* `chunks`: the per-epoch chunk generator and window shuffling;
* `tfrecord`, `tfrecord_writer`: TFRecord files read (with the same checks) and written.
"""

import ranker  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from training.data.dataset import (
    column_names,
    count_rows,
    make_dataset,
    read_arrays,
    read_columns,
    read_tensors,
)
from training.data.encoding import SEQUENCE_SEPARATOR, Arrays, Tensors
from training.data.entity_tables import TABLE_FILES, EntityTable, EntityTables
from training.data.errors import DataError, reader_errors
from training.data.formats import FORMATS, file_format
from training.data.options import ReadOptions
from training.data.tfrecord_writer import write_tfrecord

__all__ = [
    "FORMATS",
    "SEQUENCE_SEPARATOR",
    "TABLE_FILES",
    "Arrays",
    "DataError",
    "EntityTable",
    "EntityTables",
    "ReadOptions",
    "Tensors",
    "column_names",
    "count_rows",
    "file_format",
    "make_dataset",
    "read_arrays",
    "read_columns",
    "read_tensors",
    "reader_errors",
    "write_tfrecord",
]
