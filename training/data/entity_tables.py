"""The user and item feature tables a reader joins into impressions by the schema's entity keys.

User and item features missing from an impression file are joined from `users.parquet` and
`items.parquet` in the same directory (`TABLE_FILES`) by `schema.keys.user` and
`schema.keys.item`. The tables are small and held in memory as model-ready tensors; the join is
one `tf.gather` per feature. A user or item id absent from its table gets the documented fill
for every feature joined from that table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ranker.schema import Entity, Feature, Schema
from training.data.encoding import Tensors, append_fill, decode_feature, encode_feature
from training.data.errors import DataError
from training.data.sources import open_source

TABLE_FILES: dict[Entity, str] = {"user": "users.parquet", "item": "items.parquet"}


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
        source = open_source(path)
        for feature in features:
            source.check_feature(feature)
        source.check_column(key, "key")
        table = pq.read_table(path, columns=[key, *[f.name for f in features]])
        tensors = {}
        for feature in features:
            encoded = encode_feature(feature, table.column(feature.name), source.path)
            tensors[feature.name] = decode_feature(feature, append_fill(encoded, feature))
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
