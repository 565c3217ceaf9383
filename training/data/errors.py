"""Reader errors: `DataError` (one line naming the file and the column) and `reader_errors`.

A `DataError` is raised for a missing column, a column of the wrong type, a file with no rows, a
binary label outside {0, 1}, a null or NaN label. Column presence and types are checked up front
from the file's metadata; values are checked per chunk while streaming. TensorFlow wraps errors
raised while a dataset is iterated; `reader_errors()` turns them back into the `DataError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from ranker.errors import MtrankError
from ranker.keras_compat import tf


class DataError(MtrankError, ValueError):
    """A data file does not match the schema; the message names the file and the column."""


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


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none), for a DataError."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
