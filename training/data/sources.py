"""Parquet and CSV files seen as typed columns and a stream of pyarrow record batches.

`open_source` reads a file's metadata (never its data) and checks it has rows; the source then
checks columns and their types against the schema (`check_feature`, `check_label`) and streams
the columns asked for: Parquet with `ParquetFile.iter_batches`, CSV with pyarrow's streaming CSV
reader, in record batches of at most the rows asked for.

Pieces and sharding: the pieces of a file are its Parquet row groups or CSV blocks, which a
shuffled read visits in a random order each epoch. A Parquet worker reads one contiguous
1/num_shards of the rows (only the row groups it needs); a CSV worker keeps every num_shards-th
block. Shards are disjoint and together cover the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ranker.schema import Feature
from training.data.encoding import type_kind
from training.data.errors import DataError, first_line
from training.data.formats import file_format


@dataclass
class Source:
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
        kind = type_kind(self.schema.field(feature.name).type)
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
        if type_kind(self.schema.field(name).type) not in ("number", "integer"):
            actual = self.schema.field(name).type
            raise DataError(f"{self.path}: label column {name!r} has type {actual}, not a number")

    def pieces(self, shard_index: int, num_shards: int) -> list[Any] | None:
        """The parts of the file this shard reads, in order (None: decided while streaming)."""
        raise NotImplementedError

    def batches(
        self, columns: list[str], pieces: Any, shard_index: int, num_shards: int, rows: int
    ) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError


class ParquetSource(Source):
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


class CsvSource(Source):
    """pyarrow's streaming CSV reader; categorical and sequence columns are read as strings."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        super().__init__(path, schema, None)
        self.types: dict[str, pa.DataType] = {}

    @classmethod
    def open(cls, path: Path) -> CsvSource:
        try:
            reader = pacsv.open_csv(path)
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):
                raise DataError(f"{path}: the file has no rows") from None
            raise DataError(f"{path}: not a readable CSV file ({first_line(err)})") from None
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
        text = first_line(err)
        found = re.search(r"In CSV column #(\d+): (.*)", text)
        if found is None:
            return f"{self.path}: {text}"
        name = self.columns[int(found.group(1))]
        return f"{self.path}: column {name!r} has a value of the wrong type ({found.group(2)})"


def open_source(path: Path) -> Source:
    """Open the file's metadata (never its data); a DataError if it is missing or has no rows."""
    fmt = file_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    source: Source
    if fmt == "parquet":
        try:
            source = ParquetSource(path)
        except pa.ArrowException as err:
            raise DataError(f"{path}: not a readable Parquet file ({first_line(err)})") from None
        if source.num_rows == 0:
            raise DataError(f"{path}: the file has no rows")
        return source
    if fmt == "csv":
        return CsvSource.open(path)
    raise DataError(f"{path}: {fmt} files hold no columns to read this way")
