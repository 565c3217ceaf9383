"""Training data readers: Parquet, CSV and TFRecord files into `tf.data` batches, per the schema.

Every dataset yields `(features, labels)` batches (or `features` alone with `labels=False`):

* `features[name]` for every schema feature, in the raw form the model boundary takes: categorical
  values as tf.string [batch] (integers converted like `str()`), numeric values as float32 [batch],
  sequences as tf.string [batch, max_length] padded with "" (longer lists keep their first
  max_length items; empty strings inside a list are dropped).
* `labels[column]` for every task label column, float32 [batch].

Layout. An impression file (`train.parquet`, `val.csv`, ...) holds the context features and labels.
User and item features missing from it are joined from `users.parquet` and `items.parquet` in the
same directory by the schema's entity keys (`schema.keys.user`, `schema.keys.item`); columns the
impression file already has are used as they are, so a denormalized table trains too. The entity
tables are small and held in memory as tensors; the join is one `tf.gather` per feature.

Documented fills (never errors): a null or NaN numeric value becomes the feature's `default`
(0.0 unless set); a null categorical value becomes ""; a user or item id absent from its table
gets the fill for every feature joined from that table.

Errors (`DataError`, one line naming file and column): a missing column, a column of the wrong
type, a file with no rows, a binary label outside {0, 1}, a null or NaN label. Column presence
and types are checked up front from the file's metadata; values are checked per chunk while
streaming. TensorFlow wraps errors raised while a dataset is iterated; `reader_errors()` turns
them back into the `DataError`.

Speed. Parquet is streamed with `ParquetFile.iter_batches` and CSV with pyarrow's streaming CSV
reader, in chunks of `chunk_rows` rows. Each chunk is converted with vectorized pyarrow and numpy
(categorical columns are dictionary-encoded, so only distinct values become Python objects),
crosses into TensorFlow through `Dataset.from_generator`, is decoded by a parallel `map`
(gathers, padding) and cut into batches by `rebatch`. No Python runs per row.

Shuffling (`shuffle=True`): the pieces of the file (Parquet row groups, CSV blocks) are visited in
a random order each epoch, and rows are permuted within windows of `max(shuffle_buffer,
chunk_rows)` rows. TFRecord files use `Dataset.shuffle(shuffle_buffer)` over records.

Sharding (`num_shards`, `shard_index`): a Parquet worker reads one contiguous 1/num_shards of the
rows (only the row groups it needs); CSV and TFRecord workers keep every num_shards-th block or
record. Shards are disjoint and together cover the file.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

import ranker  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ranker.errors import MtrankError
from ranker.keras_compat import tf
from ranker.schema import Entity, Feature, Schema

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tfrecord": "tfrecord"}
TABLE_FILES: dict[Entity, str] = {"user": "users.parquet", "item": "items.parquet"}
SEQUENCE_SEPARATOR = "|"

Arrays = dict[str, np.ndarray]
Tensors = dict[str, Any]  # name -> tf.Tensor


class DataError(MtrankError, ValueError):
    """A data file does not match the schema; the message names the file and the column."""


@dataclass(frozen=True)
class ReadOptions:
    """How a split is read: batching, shuffling, repetition, sharding, and whether labels come."""

    batch_size: int = 1024
    shuffle: bool = False
    shuffle_buffer: int = 100_000
    seed: int | None = None
    repeat: bool = False
    drop_remainder: bool = False
    num_shards: int = 1
    shard_index: int = 0
    labels: bool = True
    chunk_rows: int = 65_536

    def __post_init__(self) -> None:
        for name in ("batch_size", "shuffle_buffer", "num_shards", "chunk_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"shard_index must be in [0, {self.num_shards}), got {self.shard_index}"
            )


# ---- public entry points ---------------------------------------------------------------------


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
        return _tfrecord_dataset(path, schema, options)
    source = _source(path)
    plan = _plan(source, schema, options.labels, tables)
    chunks = tf.data.Dataset.from_generator(
        _chunk_generator(source, plan, options), output_signature=plan.signature()
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
    return _to_numpy(features), _to_numpy(label_tensors)


def read_columns(path: str | Path, columns: Sequence[str]) -> Arrays:
    """Raw columns of a Parquet or CSV file as numpy arrays (e.g. labels, user ids, p_click)."""
    source = _source(Path(path))
    for column in columns:
        source.check_column(column, "requested")
    batches = list(source.batches(list(columns), None, 0, 1, 1 << 16))
    table = pa.Table.from_batches(batches, schema=batches[0].schema)
    return {c: table.column(c).to_numpy() for c in columns}


def column_names(path: str | Path) -> list[str]:
    """The columns of a Parquet or CSV file (from its metadata or header)."""
    return _source(Path(path)).columns


def count_rows(path: str | Path) -> int:
    """Rows in a split: Parquet from its metadata; CSV and TFRecord by one pass over the file."""
    path = Path(path)
    if file_format(path) == "tfrecord":
        if not path.exists():
            raise DataError(f"{path}: no such file")
        return int(tf.data.TFRecordDataset(str(path)).reduce(np.int64(0), lambda n, _: n + 1))
    source = _source(path)
    if source.num_rows is not None:
        return source.num_rows
    first = source.columns[:1]
    return sum(batch.num_rows for batch in source.batches(first, None, 0, 1, 1 << 16))


@contextmanager
def reader_errors() -> Iterator[None]:
    """Re-raise a `DataError` that TensorFlow wrapped during iteration as the one-line DataError."""
    try:
        yield
    except tf.errors.OpError as err:
        found = re.search(r"DataError: ([^\n]*)", err.message or "")
        if found is None:
            raise
        # graph-side assertions (TFRecord) print their message escaped and inside [...]
        raise DataError(found.group(1).replace("\\'", "'").rstrip("]")) from None


def file_format(path: Path) -> str:
    """'parquet', 'csv' or 'tfrecord', from the file suffix."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown data format {path.suffix!r}; use one of {sorted(FORMATS)}"
        )
    return fmt


# ---- entity tables -------------------------------------------------------------------------------


@dataclass
class EntityTable:
    """One entity's feature table in memory: its keys and one model-ready tensor per feature.

    Each tensor has one row per key plus a last row holding the documented fill, which is what an
    unknown key gathers.
    """

    path: Path
    key: str
    keys: pa.Array
    tensors: Tensors

    @classmethod
    def load(cls, path: Path, key: str, features: Sequence[Feature]) -> EntityTable:
        """Read `path`, check its columns, and encode `features` (all rows at once)."""
        if not path.exists():
            names = ", ".join(repr(f.name) for f in features)
            raise DataError(f"{path}: no such entity table (needed for features {names})")
        source = _source(path)
        for feature in features:
            source.check_feature(feature)
        source.check_column(key, "key")
        table = pq.read_table(path, columns=[key, *[f.name for f in features]])
        tensors = {}
        for feature in features:
            encoded = _encode_feature(feature, table.column(feature.name), source.path)
            tensors[feature.name] = _decode_feature(feature, _append_fill(encoded, feature))
        keys = table.column(key).combine_chunks()
        return cls(path, key, keys, tensors)

    def rows(self, keys: pa.Array) -> np.ndarray:
        """The table row of each key, or the fill row (len(table)) for keys it does not hold."""
        table_keys = self.keys
        if keys.type != table_keys.type:
            keys, table_keys = pc.cast(keys, pa.string()), pc.cast(table_keys, pa.string())
        found = pc.index_in(keys, value_set=table_keys)
        return pc.fill_null(found, len(self.keys)).to_numpy().astype(np.int64)


@dataclass
class EntityTables:
    """The user and item tables a reader joins; built by `load` for the features a file lacks."""

    tables: dict[Entity, EntityTable] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path, schema: Schema, needed: Sequence[Feature]) -> EntityTables:
        """Load the tables holding `needed` features from `directory` (users/items.parquet)."""
        tables: dict[Entity, EntityTable] = {}
        for entity, filename in TABLE_FILES.items():
            features = [f for f in needed if f.entity == entity]
            if features:
                key = schema.keys.user if entity == "user" else schema.keys.item
                tables[entity] = EntityTable.load(directory / filename, key, features)
        return cls(tables)


# ---- sources: Parquet and CSV streamed as pyarrow record batches ---------------------------------


@dataclass
class _Source:
    """A Parquet or CSV file seen as typed columns and a stream of record batches."""

    path: Path
    schema: pa.Schema
    num_rows: int | None

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def check_column(self, name: str, role: str) -> None:
        if name not in self.schema.names:
            raise DataError(f"{self.path}: column {name!r} is missing ({role})")

    def check_feature(self, feature: Feature) -> None:
        """Raise a DataError unless the column exists with a type the feature can take."""
        self.check_column(feature.name, f"{feature.type} feature")
        kind = _type_kind(self.schema.field(feature.name).type)
        allowed = {
            "numeric": {"number", "integer"},
            "categorical": {"string", "integer"},
            "sequence": {"list", "string"},
        }[feature.type]
        if kind not in allowed:
            actual = self.schema.field(feature.name).type
            raise DataError(
                f"{self.path}: column {feature.name!r} has type {actual}, which a "
                f"{feature.type} feature cannot take (expected {' or '.join(sorted(allowed))})"
            )

    def check_label(self, name: str) -> None:
        self.check_column(name, "label")
        if _type_kind(self.schema.field(name).type) not in ("number", "integer"):
            actual = self.schema.field(name).type
            raise DataError(f"{self.path}: label column {name!r} has type {actual}, not a number")

    def pieces(self, shard_index: int, num_shards: int) -> list[Any] | None:
        """The parts of the file this shard reads, in order (None: decided while streaming)."""
        raise NotImplementedError

    def batches(
        self, columns: list[str], pieces: Any, shard_index: int, num_shards: int, rows: int
    ) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError


class _ParquetSource(_Source):
    """Row groups read with `iter_batches`; a shard is a contiguous range of rows."""

    def __init__(self, path: Path) -> None:
        self.file = pq.ParquetFile(path)
        metadata = self.file.metadata
        super().__init__(path, self.file.schema_arrow, metadata.num_rows)
        self.group_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]

    def pieces(self, shard_index: int, num_shards: int) -> list[tuple[int, int, int]]:
        """(row group, first row, end row) pieces, relative to the group, of this shard's rows."""
        total = sum(self.group_rows)
        lo, hi = total * shard_index // num_shards, total * (shard_index + 1) // num_shards
        pieces, start = [], 0
        for group, count in enumerate(self.group_rows):
            a, b = max(lo, start), min(hi, start + count)
            if a < b:
                pieces.append((group, a - start, b - start))
            start += count
        return pieces

    def batches(
        self, columns: list[str], pieces: Any, shard_index: int, num_shards: int, rows: int
    ) -> Iterator[pa.RecordBatch]:
        if pieces is None:
            pieces = self.pieces(shard_index, num_shards)
        file = pq.ParquetFile(self.path)  # one handle per generator: safe across iterators
        for group, lo, hi in pieces:
            position = 0
            for batch in file.iter_batches(batch_size=rows, row_groups=[group], columns=columns):
                a, b = max(lo - position, 0), min(hi - position, batch.num_rows)
                position += batch.num_rows
                if a < b:
                    yield batch.slice(a, b - a)
                if position >= hi:
                    break


class _CsvSource(_Source):
    """pyarrow's streaming CSV reader; categorical and sequence columns are read as strings."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        super().__init__(path, schema, None)
        self.types: dict[str, pa.DataType] = {}

    @classmethod
    def open(cls, path: Path) -> _CsvSource:
        try:
            reader = pacsv.open_csv(path)
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):
                raise DataError(f"{path}: the file has no rows") from None
            raise DataError(f"{path}: not a readable CSV file ({_first_line(err)})") from None
        if next(iter(reader), None) is None:
            raise DataError(f"{path}: the file has no rows")
        return cls(path, reader.schema)

    def pieces(self, shard_index: int, num_shards: int) -> None:
        return None

    def check_feature(self, feature: Feature) -> None:
        """Presence only: CSV types are fixed by the schema and checked as values convert."""
        self.check_column(feature.name, f"{feature.type} feature")

    def check_label(self, name: str) -> None:
        self.check_column(name, "label")

    def batches(
        self, columns: list[str], pieces: Any, shard_index: int, num_shards: int, rows: int
    ) -> Iterator[pa.RecordBatch]:
        convert = pacsv.ConvertOptions(
            column_types={c: self.types[c] for c in columns if c in self.types},
            include_columns=columns,
        )
        try:
            reader = pacsv.open_csv(self.path, convert_options=convert)
            for block, batch in enumerate(reader):
                if block % num_shards == shard_index:
                    yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=rows)
        except pa.ArrowInvalid as err:
            raise DataError(self._describe(err)) from None

    def _describe(self, err: pa.ArrowInvalid) -> str:
        """`file: column 'x': message` from Arrow's 'In CSV column #3: ...' conversion errors."""
        text = _first_line(err)
        found = re.search(r"In CSV column #(\d+): (.*)", text)
        if found is None:
            return f"{self.path}: {text}"
        name = self.columns[int(found.group(1))]
        return f"{self.path}: column {name!r} has a value of the wrong type ({found.group(2)})"


def _source(path: Path) -> _Source:
    """Open the file's metadata (never its data); a DataError if it is missing or has no rows."""
    fmt = file_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    source: _Source
    if fmt == "parquet":
        try:
            source = _ParquetSource(path)
        except pa.ArrowException as err:
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
        if source.num_rows == 0:
            raise DataError(f"{path}: the file has no rows")
        return source
    if fmt == "csv":
        return _CsvSource.open(path)
    raise DataError(f"{path}: {fmt} files hold no columns to read this way")


_STRING_TYPES = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)


def _type_kind(dtype: pa.DataType) -> str:
    """'integer', 'number', 'string', 'list' or 'other' for an Arrow type."""
    if pa.types.is_dictionary(dtype):
        return _type_kind(dtype.value_type)
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_boolean(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if any(is_(dtype) for is_ in _STRING_TYPES):
        return "string"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return "list"
    if pa.types.is_null(dtype):
        return "null"
    return "other"


# ---- the plan: which columns come from where, and how a chunk decodes ---------------------------


@dataclass
class _Plan:
    """What a reader yields for one file: features read directly, joined, and label columns.

    A chunk crosses from Python into TensorFlow as flat arrays named `name:part`; `decode` turns
    it into the model's features and labels inside the tf.data graph.
    """

    path: Path
    direct: list[Feature]
    joined: dict[Entity, list[Feature]]
    tables: EntityTables
    labels: list[str]
    binary_labels: set[str]
    keys: dict[Entity, str]
    schema: Schema

    @property
    def columns(self) -> list[str]:
        names = [f.name for f in self.direct] + [self.keys[e] for e in self.joined] + self.labels
        return list(dict.fromkeys(names))

    def signature(self) -> dict[str, tf.TensorSpec]:
        spec: dict[str, tf.TensorSpec] = {}
        for feature in self.direct:
            for part, dtype in _PARTS[feature.type]:
                shape = [] if part == "bytes" else [None]
                spec[f"{feature.name}:{part}"] = tf.TensorSpec(shape, dtype)
        for entity in self.joined:
            spec[f"{entity}:row"] = tf.TensorSpec([None], tf.int64)
        for label in self.labels:
            spec[f"{label}:label"] = tf.TensorSpec([None], tf.float32)
        return spec

    def encode(self, batch: pa.RecordBatch) -> Arrays:
        """One record batch as the flat numpy arrays of `signature` (values checked)."""
        chunk: Arrays = {}
        for feature in self.direct:
            encoded = _encode_feature(feature, batch.column(feature.name), self.path)
            chunk.update({f"{feature.name}:{part}": v for part, v in encoded.items()})
        for entity in self.joined:
            key = batch.column(self.keys[entity])
            chunk[f"{entity}:row"] = self.tables.tables[entity].rows(key)
        for label in self.labels:
            chunk[f"{label}:label"] = _encode_label(
                batch.column(label), label, label in self.binary_labels, self.path
            )
        return chunk

    def decode(self, chunk: Tensors) -> Tensors:
        """Directly read features from an encoded chunk (runs in the tf.data graph, per chunk).

        Entity row numbers and labels pass through, so `rebatch` cuts plain tensors and the
        joined features are gathered per batch by `join`, never copied twice.
        """
        decoded = {f"{entity}:row": chunk[f"{entity}:row"] for entity in self.joined} | {
            f"{label}:label": chunk[f"{label}:label"] for label in self.labels
        }
        for feature in self.direct:
            parts = {p: chunk[f"{feature.name}:{p}"] for p, _ in _PARTS[feature.type]}
            decoded[feature.name] = _decode_feature(feature, parts)
        return decoded

    def join(self, batch: Tensors) -> Any:
        """The model's features (and labels) of a decoded batch, gathering entity features."""
        features = {f.name: batch[f.name] for f in self.direct}
        for entity, entity_features in self.joined.items():
            rows = batch[f"{entity}:row"]
            for feature in entity_features:
                table = self.tables.tables[entity].tensors[feature.name]
                features[feature.name] = tf.gather(table, rows)
        ordered = {f.name: features[f.name] for f in self.schema.features}
        if not self.labels:
            return ordered
        return ordered, {label: batch[f"{label}:label"] for label in self.labels}


_PARTS: dict[str, list[tuple[str, tf.DType]]] = {
    "numeric": [("value", tf.float32)],
    "categorical": [("bytes", tf.string), ("offsets", tf.int64)],
    "sequence": [("bytes", tf.string), ("offsets", tf.int64), ("splits", tf.int64)],
}


def _plan(source: _Source, schema: Schema, labels: bool, tables: EntityTables | None) -> _Plan:
    """Check the file's columns against the schema and decide where each feature comes from."""
    present = set(source.columns)
    direct = [f for f in schema.features if f.name in present]
    absent = [f for f in schema.features if f.name not in present]
    context = [f for f in absent if f.entity == "context"]
    if context:
        source.check_column(context[0].name, f"{context[0].type} context feature")
    keys: dict[Entity, str] = {"user": schema.keys.user, "item": schema.keys.item}
    joined: dict[Entity, list[Feature]] = {}
    for feature in absent:
        joined.setdefault(feature.entity, []).append(feature)
    for entity in joined:
        source.check_column(keys[entity], f"{entity} key, to join {entity} features")
    for feature in direct:
        source.check_feature(feature)
    label_columns = list(dict.fromkeys(schema.label_columns)) if labels else []
    for label in label_columns:
        source.check_label(label)
    if tables is None:
        tables = EntityTables.load(source.path.parent, schema, absent)
    if isinstance(source, _CsvSource):
        source.types = _csv_types(direct, label_columns)
    binary = {t.label for t in schema.tasks if t.type == "binary"}
    return _Plan(source.path, direct, joined, tables, label_columns, binary, keys, schema)


def _csv_types(direct: Sequence[Feature], labels: Sequence[str]) -> dict[str, pa.DataType]:
    """CSV column types: strings for categorical and sequence columns, float64 for numbers."""
    types = {f.name: pa.float64() if f.type == "numeric" else pa.string() for f in direct}
    types.update({label: pa.float64() for label in labels})
    return types


# ---- encoding (numpy, per record batch) and decoding (TensorFlow, per chunk) --------------------


def _encode_feature(feature: Feature, column: pa.Array, path: Path) -> Arrays:
    """The flat arrays one feature column crosses into TensorFlow as (see `_PARTS`)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if feature.type == "numeric":
        return {"value": _encode_numeric(column, feature, path)}
    if feature.type == "categorical":
        return _string_buffers(column)
    splits, values = _sequence_values(column)
    return {**_string_buffers(values), "splits": splits}


def _encode_numeric(column: pa.Array, feature: Feature, path: Path) -> np.ndarray:
    """float32 values with nulls and NaNs replaced by the documented fill."""
    fill = float(feature.missing_value)  # type: ignore[arg-type]
    try:
        values = pc.cast(column, pa.float32())
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: column {feature.name!r}: {_first_line(err)}") from None
    array = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
    array[np.isnan(array)] = fill
    return array


def _string_buffers(column: pa.Array) -> Arrays:
    """A column as strings ("" for nulls) in Arrow's layout: all bytes and n + 1 offsets.

    TensorFlow cuts the strings back out with one vectorized `tf.strings.substr`, so no Python
    object is made per value.
    """
    value_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    binary = pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type)
    strings = pc.cast(column, pa.binary() if binary else pa.string())
    if strings.null_count:
        strings = pc.fill_null(strings, "")
    _, offset_buffer, data = strings.buffers()
    start = strings.offset
    offsets = np.frombuffer(offset_buffer, np.int32)[start : start + len(strings) + 1]
    first, last = int(offsets[0]), int(offsets[-1])
    raw = data.slice(first, last - first).to_pybytes() if data is not None else b""
    return {"bytes": np.array(raw, dtype=object), "offsets": offsets.astype(np.int64) - first}


def _sequence_values(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Row splits and flat values of a list (or '|'-joined string) column, dropping "" and nulls."""
    if _type_kind(column.type) == "string":
        strings = pc.cast(column, pa.string()) if pa.types.is_dictionary(column.type) else column
        column = pc.split_pattern(pc.fill_null(strings, ""), SEQUENCE_SEPARATOR)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    splits = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    values = column.flatten()
    if _type_kind(values.type) != "string":
        values = pc.cast(values, pa.string())
    nonempty = pc.fill_null(pc.not_equal(pc.binary_length(values), 0), False)
    keep = nonempty.to_numpy(zero_copy_only=False)
    if keep.all():
        return splits, values
    kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept[splits], values.filter(pa.array(keep))


def _encode_label(column: pa.Array, name: str, binary: bool, path: Path) -> np.ndarray:
    """float32 label values; a null/NaN label, or a binary one outside {0, 1}, is a DataError."""
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if np.isnan(values).any():
        raise DataError(f"{path}: label column {name!r} has a null or NaN value")
    if binary:
        bad = (values != 0.0) & (values != 1.0)
        if bad.any():
            raise DataError(
                f"{path}: label column {name!r} has value {values[bad][0]:g}; "
                "a binary task's label must be 0 or 1"
            )
    return values.astype(np.float32)


def _decode_feature(feature: Feature, parts: Mapping[str, Any]) -> Any:
    """The model-boundary tensor of one feature from its encoded parts."""
    if feature.type == "numeric":
        return tf.convert_to_tensor(parts["value"], tf.float32)
    offsets = tf.convert_to_tensor(parts["offsets"], tf.int64)
    strings = tf.strings.substr(parts["bytes"], offsets[:-1], offsets[1:] - offsets[:-1])
    if feature.type == "categorical":
        return strings
    ragged = tf.RaggedTensor.from_row_splits(strings, parts["splits"], validate=False)
    return ragged.to_tensor(default_value="", shape=[None, feature.max_length])


def _append_fill(encoded: Arrays, feature: Feature) -> Arrays:
    """Encoded parts of an entity table with one extra row holding the documented fill."""
    parts = dict(encoded)
    if feature.type == "numeric":
        fill = np.float32(feature.missing_value)  # type: ignore[arg-type]
        parts["value"] = np.append(parts["value"], fill)
    elif feature.type == "categorical":
        parts["offsets"] = np.append(parts["offsets"], parts["offsets"][-1])
    else:
        parts["splits"] = np.append(parts["splits"], parts["splits"][-1])
    return parts


# ---- the generator: pieces -> record batches -> shuffled windows -> encoded chunks --------------


def _chunk_generator(
    source: _Source, plan: _Plan, options: ReadOptions
) -> Callable[[], Iterator[Arrays]]:
    """A generator function (called once per epoch) of encoded chunks of this shard's rows."""
    epochs = itertools.count()
    pieces = source.pieces(options.shard_index, options.num_shards)

    def chunks() -> Iterator[Arrays]:
        epoch = next(epochs)
        seed = None if options.seed is None else [options.seed, epoch]
        rng = np.random.default_rng(seed)
        order = pieces
        if options.shuffle and pieces is not None:
            order = [pieces[i] for i in rng.permutation(len(pieces))]
        batches = source.batches(
            plan.columns, order, options.shard_index, options.num_shards, options.chunk_rows
        )
        if options.shuffle:
            window = max(options.shuffle_buffer, options.chunk_rows)
            batches = _shuffled(batches, rng, window, options.chunk_rows)
        for batch in batches:
            yield plan.encode(batch)

    return chunks


def _shuffled(
    batches: Iterator[pa.RecordBatch], rng: np.random.Generator, window: int, rows: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `rows` rows, permuted within windows of >= `window` rows."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in itertools.chain(batches, [None]):
        if batch is not None:
            pending.append(batch)
            count += batch.num_rows
        if pending and (count >= window or batch is None):
            table = pa.Table.from_batches(pending).take(rng.permutation(count))
            yield from table.combine_chunks().to_batches(max_chunksize=rows)
            pending, count = [], 0


# ---- TFRecord ----------------------------------------------------------------------------------


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
            arrays = _to_numpy({**features, **label_values})
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


def _tfrecord_dataset(path: Path, schema: Schema, options: ReadOptions) -> tf.data.Dataset:
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


# ---- small helpers -----------------------------------------------------------------------------


def _concat(parts: Sequence[Tensors]) -> Tensors:
    if not parts:
        return {}
    return {name: tf.concat([p[name] for p in parts], axis=0) for name in parts[0]}


def _to_numpy(tensors: Tensors) -> Arrays:
    return {name: value.numpy() for name, value in tensors.items()}


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
