"""The data file formats a reader takes, told apart by the file's suffix."""

from __future__ import annotations

from pathlib import Path

from training.data.errors import DataError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tfrecord": "tfrecord"}


def file_format(path: Path) -> str:
    """'parquet', 'csv' or 'tfrecord', from the file suffix."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown data format {path.suffix!r}; use one of {sorted(FORMATS)}"
        )
    return fmt
