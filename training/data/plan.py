"""The read plan of one impression file: which columns come from where, and how a chunk decodes.

Context features and labels come from the impression file (`train.parquet`, `val.csv`, ...).
User and item features it lacks are joined from the entity tables (`training.data.entity_tables`)
by the schema's entity keys; columns the impression file already has are used as they are, so a
denormalized table trains too. Column presence and types are checked here, up front, from the
file's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ranker.keras_compat import tf
from ranker.schema import Entity, Feature, Schema
from training.data.encoding import (
    PARTS,
    Arrays,
    Tensors,
    decode_feature,
    encode_feature,
    encode_label,
)
from training.data.entity_tables import EntityTables
from training.data.sources import CsvSource, Source


@dataclass
class Plan:
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
            for part, dtype in PARTS[feature.type]:
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
            encoded = encode_feature(feature, batch.column(feature.name), self.path)
            chunk.update({f"{feature.name}:{part}": v for part, v in encoded.items()})
        for entity in self.joined:
            key = batch.column(self.keys[entity])
            chunk[f"{entity}:row"] = self.tables.tables[entity].rows(key)
        for label in self.labels:
            chunk[f"{label}:label"] = encode_label(
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
            parts = {p: chunk[f"{feature.name}:{p}"] for p, _ in PARTS[feature.type]}
            decoded[feature.name] = decode_feature(feature, parts)
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


def make_plan(source: Source, schema: Schema, labels: bool, tables: EntityTables | None) -> Plan:
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
    if isinstance(source, CsvSource):
        source.types = _csv_types(direct, label_columns)
    binary = {t.label for t in schema.tasks if t.type == "binary"}
    return Plan(source.path, direct, joined, tables, label_columns, binary, keys, schema)


def _csv_types(direct: Sequence[Feature], labels: Sequence[str]) -> dict[str, pa.DataType]:
    """CSV column types: strings for categorical and sequence columns, float64 for numbers."""
    types = {f.name: pa.float64() if f.type == "numeric" else pa.string() for f in direct}
    types.update({label: pa.float64() for label in labels})
    return types
