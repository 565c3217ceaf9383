"""Materialization: load `users.parquet` and `items.parquet` of a data directory into a store.

`load_entity_files` reads and checks the file of every stored entity (user, item) that the schema
has features for: missing file or column, wrong column type, null or duplicate key all raise a
`DataFileError` naming the file, column and key, before anything is written. `write_entity_files`
then writes the rows in batches, deletes rows an earlier materialization left whose ids are no
longer in the files (so the store mirrors them), writes the namespace's metadata record and
persists the store. `materialize` does both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store.codec import Row, StoredEntity
from feature_store.errors import DataFileError
from feature_store.redis_store import RedisOnlineStore
from feature_store.values import check_type, column_values, strings
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
    stale_deleted: int


def materialize(
    store: RedisOnlineStore,
    data_dir: str | Path,
    schema: Schema,
    *,
    delete_stale: bool = True,
    progress: Progress | None = None,
) -> list[EntityReport]:
    """Load the entity files of `data_dir` into `store`; return one report per loaded entity."""
    files = load_entity_files(data_dir, schema)
    return write_entity_files(store, files, delete_stale=delete_stale, progress=progress)


def load_entity_files(data_dir: str | Path, schema: Schema) -> list[EntityFile]:
    """The checked file of each entity the schema has features for (users, then items)."""
    stored: list[StoredEntity] = [e for e in ENTITY_FILES if schema.entity_features(e)]
    return [_load(Path(data_dir) / ENTITY_FILES[entity], schema, entity) for entity in stored]


def write_entity_files(
    store: RedisOnlineStore,
    files: list[EntityFile],
    *,
    delete_stale: bool = True,
    progress: Progress | None = None,
) -> list[EntityReport]:
    """Write every row of `files`, delete stale rows, record what was loaded, persist."""
    started = time.monotonic()
    reports = []
    for file in files:
        current: set[str] = set()
        for rows in _rows(file):
            store.write(file.entity, rows)
            current.update(entity_id for entity_id, _ in rows)
            if progress is not None:
                progress(file.entity, len(current), file.table.num_rows)
        stale = 0
        if delete_stale:
            old = [i for i in store.entity_ids(file.entity) if i not in current]
            stale = store.delete(file.entity, old)
        reports.append(EntityReport(file.entity, len(current), stale))
    store.write_metadata(_record(files, time.monotonic() - started))
    store.persist()
    return reports


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
    """`(id, row)` pairs, READ_BATCH at a time; missing values are left out of each row."""
    where = str(file.path)
    for batch in file.table.to_batches(max_chunksize=READ_BATCH):
        chunk = pa.Table.from_batches([batch])
        ids = strings(chunk.column(file.key))
        columns = [(f.name, column_values(f, chunk.column(f.name), where)) for f in file.features]
        rows: list[tuple[str, Row]] = []
        for i, entity_id in enumerate(ids):
            row: Row = {name: v for name, values in columns if (v := values[i]) is not None}
            rows.append((str(entity_id), row))
        yield rows


def _record(files: list[EntityFile], seconds: float) -> dict[str, Any]:
    """The metadata record: when, and which file, key and features each entity came from."""
    return {
        "format": 1,
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
