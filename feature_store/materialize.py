"""Materialization: load `users.parquet` and `items.parquet` of a data directory into a store.

`load_entity_files` reads and checks the file of every stored entity (user, item) that the schema
has features for: missing file or column, wrong column type, null or duplicate key all raise a
`DataFileError` naming the file, column and key, before anything is written. `write_entity_files`
then sizes each entity's record (`records.Record`: strings as wide as the longest value, sequences as
long as the longest, cut to the schema's `max_length` since the model reads no more), writes the
rows in batches into a new version of the tables, records its metadata, flips the
live version to it, deletes the older versions (the one just replaced, and any version an
interrupted materialization left behind) and persists the store. Until the flip, readers see the
previous version, complete; a materialization that fails deletes what it wrote. Running it twice
on the same files leaves the same rows (under a new version number). `materialize` does both.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store.column_values import check_type, column_values, strings
from feature_store.errors import DataFileError, FeatureStoreError
from feature_store.keys import StoredEntity
from feature_store.records import Column, Record, Row, Value
from feature_store.writer import StoreWriter
from ranker.schema import Feature, Schema

ENTITY_FILES: dict[StoredEntity, str] = {"user": "users.parquet", "item": "items.parquet"}
READ_BATCH = 10_000

Progress = Callable[[StoredEntity, int, int], None]
"""Called after each written batch with (entity, rows written so far, rows in the file)."""


@dataclass(frozen=True)
class EntityFile:
    """One entity's checked table: its key column and the stored feature columns."""

    entity: StoredEntity
    path: Path
    key: str
    features: list[Feature]
    table: pa.Table


@dataclass(frozen=True)
class EntityReport:
    """What materialization did for one entity."""

    entity: StoredEntity
    rows: int
    record_bytes: int  # the size of each row's stored value (`records.Record.size`)


@dataclass(frozen=True)
class Materialization:
    """What a materialization did: the version it flipped to and what it replaced."""

    version: int
    previous: int | None
    entities: list[EntityReport]
    deleted_keys: int  # keys of older versions deleted after the flip


def materialize(
    writer: StoreWriter,
    data_dir: str | Path,
    schema: Schema,
    *,
    progress: Progress | None = None,
    ttl_s: int | None = None,
) -> Materialization:
    """Load the entity files of `data_dir` into a new version of `writer`'s tables and flip to it."""
    files = load_entity_files(data_dir, schema)
    return write_entity_files(writer, files, progress=progress, ttl_s=ttl_s)


def load_entity_files(data_dir: str | Path, schema: Schema) -> list[EntityFile]:
    """The checked file of each entity the schema has features for (users, then items)."""
    stored: list[StoredEntity] = [e for e in ENTITY_FILES if schema.entity_features(e)]
    return [_load(Path(data_dir) / ENTITY_FILES[entity], schema, entity) for entity in stored]


def write_entity_files(
    writer: StoreWriter,
    files: list[EntityFile],
    *,
    progress: Progress | None = None,
    ttl_s: int | None = None,
) -> Materialization:
    """Write every row of `files` into a new version, flip to it, delete older versions, persist.

    `ttl_s`: rows expire that many seconds after they are written (default: never).
    """
    started = time.monotonic()
    version = writer.begin()
    try:
        reports = [_write(writer, version, file, progress, ttl_s) for file in files]
        writer.write_metadata(version, _record(files, version, time.monotonic() - started))
    except BaseException:
        with contextlib.suppress(FeatureStoreError):  # else the next materialization deletes it
            writer.discard(version)
        raise
    previous = writer.flip(version)
    deleted = writer.delete_versions_below(version)
    writer.persist()
    return Materialization(version, previous, reports, deleted)


def _write(
    writer: StoreWriter,
    version: int,
    file: EntityFile,
    progress: Progress | None,
    ttl_s: int | None,
) -> EntityReport:
    written = 0
    record = _record_of(file)
    writer.write(version, file.entity, [], record=record)  # fixed even for an empty file
    for rows in _rows(file):
        written += writer.write(version, file.entity, rows, record=record, ttl_s=ttl_s)
        if progress is not None:
            progress(file.entity, written, file.table.num_rows)
    return EntityReport(file.entity, written, record.size)


def _load(path: Path, schema: Schema, entity: StoredEntity) -> EntityFile:
    where = str(path)
    key = schema.keys.user if entity == "user" else schema.keys.item
    features = [f for f in schema.entity_features(entity) if f.name != key]
    try:
        available = pq.read_schema(path).names
    except FileNotFoundError:
        raise DataFileError(f"{where}: no such file (the schema has {entity} features)") from None
    except pa.ArrowInvalid as err:
        raise DataFileError(f"{where}: not a Parquet file ({err})") from None
    for name in [key] + [f.name for f in features]:
        if name not in available:
            role = "key" if name == key else f"{entity} feature"
            raise DataFileError(
                f"{where}: no column {name!r} ({role} in the schema); columns are {available}"
            )
    table = pq.read_table(path, columns=[key] + [f.name for f in features])
    _check_keys(table.column(key), key, where)
    for feature in features:
        check_type(feature, table.schema.field(feature.name).type, where)
    return EntityFile(entity, path, key, features, table)


def _check_keys(column: pa.ChunkedArray, key: str, where: str) -> None:
    if column.null_count:
        first = pc.index(pc.is_null(column), True).as_py()
        raise DataFileError(
            f"{where}: column {key!r} has {column.null_count} empty ids (first at row {first})"
        )
    ids = pa.array(strings(column), pa.string())
    if pc.count_distinct(ids).as_py() == len(ids):
        return
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))[0].as_py()
    raise DataFileError(
        f"{where}: {key} {repeated['values']!r} appears {repeated['counts']} times; "
        f"each {key} needs exactly one row"
    )


def _rows(file: EntityFile) -> Iterator[list[tuple[str, Row]]]:
    """`(id, row)` pairs, READ_BATCH at a time; missing values are left out of each row, and
    sequences keep their first `max_length` non-empty elements."""
    for chunk in _chunks(file):
        ids = strings(chunk.column(file.key))
        columns = [(f.name, _values(f, chunk, file)) for f in file.features]
        rows: list[tuple[str, Row]] = []
        for i, entity_id in enumerate(ids):
            row: Row = {name: v for name, values in columns if (v := values[i]) is not None}
            rows.append((str(entity_id), row))
        yield rows


def _record_of(file: EntityFile) -> Record:
    """The record `file`'s rows are stored in: its features in schema order, sized by
    `Record.infer` over the rows `_rows` gives (each string column as wide, in UTF-8 bytes, as its
    longest value, each sequence as long as its longest after the cut to `max_length`); a feature
    no row holds gets 1 byte and 1 element."""
    inferred = Record.infer(row for rows in _rows(file) for _, row in rows)
    columns = []
    for feature in file.features:
        seen = inferred.column(feature.name)
        width = 0 if feature.type == "numeric" else (seen.width if seen else 1)
        length = (seen.length if seen else 1) if feature.type == "sequence" else 0
        columns.append(Column(feature.name, feature.type, width, length))
    return Record(tuple(columns))


def _chunks(file: EntityFile) -> Iterator[pa.Table]:
    for batch in file.table.to_batches(max_chunksize=READ_BATCH):
        yield pa.Table.from_batches([batch])


def _values(feature: Feature, chunk: pa.Table, file: EntityFile) -> Sequence[Value | None]:
    """`feature`'s raw values in `chunk` (None where missing); sequences cut as `_rows` says."""
    values = column_values(feature, chunk.column(feature.name), str(file.path))
    if feature.type != "sequence":
        return values
    assert feature.max_length is not None
    return [
        [e for e in seq if e][: feature.max_length] if isinstance(seq, list) else seq
        for seq in values
    ]


def _record(files: list[EntityFile], version: int, seconds: float) -> dict[str, Any]:
    """The metadata record: when, and which file, key and features each entity came from (the
    writer adds the record layout of each entity, the same features in the same order)."""
    return {
        "format": 4,
        "version": version,
        "materialized_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "entities": {
            f.entity: {
                "file": str(f.path.resolve()),
                "key": f.key,
                "rows": f.table.num_rows,
                "features": [feature.name for feature in f.features],
            }
            for f in files
        },
    }
