"""Errors of the online feature store.

`StoreUnavailable` is an outage, not a user mistake: serving catches it and answers in degraded mode
(defaults for every stored feature). `DataFileError` is a user's mistake in a Parquet file; the CLI
prints it as one line naming the file, the column and, where there is one, the key.
"""

from __future__ import annotations

from ranker.errors import MtrankError


class FeatureStoreError(Exception):
    """Base of the store's own failures (unreachable, corrupt values)."""


class StoreUnavailable(FeatureStoreError):
    """The store could not be reached in time: connection refused, timed out or still loading."""


class CorruptValue(FeatureStoreError):
    """A stored value or meta record is not what this version of mtrank reads; names the key."""


class DataFileError(MtrankError, ValueError):
    """A users/items Parquet file does not fit the schema; the message names the file and column."""


class StoreConfigError(MtrankError, ValueError):
    """A Redis URL or store directory that cannot be used; the message names it."""
