"""The feature schema: which raw features a model reads, which tasks it learns, which products it outputs.

Pure Python (pydantic and PyYAML only, never TensorFlow), so that the feature store and the service
can share it without loading Keras. A `schema.yaml` looks like::

    features:
      - {name: user_id, type: categorical, entity: user, num_buckets: 100000, embedding_dim: 16}
      - {name: device,  type: categorical, entity: context, vocabulary: [ios, android, web]}
      - {name: price,   type: numeric,     entity: item, transform: log1p}
      - {name: recent_items, type: sequence, entity: user, max_length: 20, shared_embedding: item_id}
    tasks:
      - {name: ctr, label: click}
      - {name: cvr, label: conversion, condition: click}
    products:
      - {name: ctcvr, of: [ctr, cvr]}

Raw values at the model boundary: categorical values are strings (integers are converted with
`str()`), numeric values are float32, sequences are lists of strings padded with "" to
`max_length`. A missing or NaN numeric value is replaced by the feature's `default` (0.0 unless
set) before its transform; a missing categorical value is "" (out of vocabulary).

A sequence is pooled into one vector by `pooling: mean` (the default) or `pooling: attention`
(target attention: each element is weighted by its relevance to the candidate item, whose embedding
is the query). The query is the item categorical named by `query`, by default the one whose table
the sequence shares (`shared_embedding`); its embedding_dim must equal the sequence's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ranker.config_files import read_yaml, validate_mapping
from ranker.errors import SchemaError

FeatureType = Literal["categorical", "numeric", "sequence"]
Entity = Literal["user", "item", "context"]
Transform = Literal["none", "log1p", "sqrt"]
Pooling = Literal["mean", "attention"]
TaskType = Literal["binary", "regression"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"must be an identifier (letters, digits, _), got {value!r}")
    return value


def _check_positive(value: int) -> int:
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def _check_buckets(value: int) -> int:
    if value < 2:
        raise ValueError(f"must be >= 2 (bucket 0 is reserved for missing values), got {value}")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Positive = Annotated[int, AfterValidator(_check_positive)]
Buckets = Annotated[int, AfterValidator(_check_buckets)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One raw input feature and how the model encodes it."""

    name: Name
    type: FeatureType
    entity: Entity
    # categorical and sequence: a fixed vocabulary (plus one OOV bucket) or hashing into num_buckets
    vocabulary: list[str] | None = None
    num_buckets: Buckets | None = None
    embedding_dim: Positive = 8
    # sequence: pad/truncate length, and optionally the categorical feature whose table it shares
    max_length: Positive | None = None
    shared_embedding: str | None = None
    # sequence: how its elements become one vector; attention is queried by an item categorical
    pooling: Pooling = "mean"
    query: str | None = None
    # numeric: transform before normalization (statistics adapted from training data)
    transform: Transform = "none"
    normalize: bool = True
    default: float | None = None

    @field_validator("vocabulary")
    @classmethod
    def _check_vocabulary(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("must not be empty")
        if len(set(value)) != len(value):
            dupes = sorted({v for v in value if value.count(v) > 1})
            raise ValueError(f"has duplicate entries {dupes}")
        if "" in value:
            raise ValueError('must not contain "" (the missing value)')
        return value

    @model_validator(mode="after")
    def _check_type_fields(self) -> Feature:
        given = self.model_fields_set
        allowed = {
            "categorical": {"vocabulary", "num_buckets", "embedding_dim"},
            "sequence": {
                "vocabulary",
                "num_buckets",
                "embedding_dim",
                "max_length",
                "shared_embedding",
                "pooling",
                "query",
            },
            "numeric": {"transform", "normalize", "default"},
        }[self.type]
        common = {"name", "type", "entity"}
        misplaced = sorted(given - allowed - common)
        if misplaced:
            raise ValueError(f"key {misplaced[0]!r} does not apply to a {self.type} feature")
        if self.type == "categorical" and (self.vocabulary is None) == (self.num_buckets is None):
            raise ValueError(
                "a categorical feature needs exactly one of 'vocabulary' or 'num_buckets'"
            )
        if self.type == "sequence":
            if self.max_length is None:
                raise ValueError("a sequence feature needs 'max_length'")
            sources = sum(
                x is not None for x in (self.vocabulary, self.num_buckets, self.shared_embedding)
            )
            if sources != 1:
                raise ValueError(
                    "a sequence feature needs exactly one of 'vocabulary', 'num_buckets' "
                    "or 'shared_embedding'"
                )
            if self.query is not None and self.pooling != "attention":
                raise ValueError("key 'query' needs 'pooling: attention'")
        return self

    @property
    def is_embedded(self) -> bool:
        return self.type in ("categorical", "sequence")

    @property
    def table_size(self) -> int:
        """Rows of the embedding table: the vocabulary plus one OOV row, or the hash buckets."""
        if self.vocabulary is not None:
            return len(self.vocabulary) + 1
        if self.num_buckets is not None:
            return self.num_buckets
        raise ValueError(f"feature {self.name!r} has no table of its own")

    @property
    def missing_value(self) -> str | float | list[str]:
        """The raw value that stands for 'missing' (used by serving when the store has none)."""
        if self.type == "numeric":
            return float(self.default) if self.default is not None else 0.0
        if self.type == "sequence":
            return []
        return ""


class Task(_Strict):
    """A learning target: one label column, binary (sigmoid) or regression (identity).

    `auxiliary: true`: a task trained (weighted by the balancing strategy like any other) and
    reported in the metrics to help the others learn, but not served (not an output of the
    export's signature, not part of a product) and never the early-stopping monitor.
    """

    name: Name
    label: Name
    type: TaskType = "binary"
    condition: str | None = None
    weight: float = 1.0
    auxiliary: bool = False

    @field_validator("weight")
    @classmethod
    def _check_weight(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value


class Product(_Strict):
    """An output that is the product of binary task scores, e.g. ctcvr = ctr * cvr."""

    name: Name
    of: list[str] = Field(min_length=2)


class Scoring(_Strict):
    """What an output is trained and evaluated against: the product of the `labels` columns, on
    the rows where the `condition` column is 1 (all rows without one). A task: its label, on the
    rows its condition marks (cvr: conversion where click is 1); a product: the product of its
    tasks' labels on all rows (ctcvr: click * conversion)."""

    labels: tuple[str, ...]
    condition: str | None = None


class EntityKeys(_Strict):
    """The feature that identifies each stored entity (the online store's key)."""

    user: str = "user_id"
    item: str = "item_id"


class Schema(_Strict):
    """The whole `schema.yaml`: features, tasks, products and entity keys."""

    features: list[Feature] = Field(min_length=1)
    tasks: list[Task] = Field(min_length=1)
    products: list[Product] = Field(default_factory=list)
    keys: EntityKeys = Field(default_factory=EntityKeys)

    @model_validator(mode="after")
    def _check_references(self) -> Schema:
        _unique("features", [f.name for f in self.features])
        _unique("tasks", [t.name for t in self.tasks])
        _unique("outputs", [t.name for t in self.tasks] + [p.name for p in self.products])
        by_name = {f.name: f for f in self.features}
        for i, feature in enumerate(self.features):
            if feature.shared_embedding is None:
                continue
            target = by_name.get(feature.shared_embedding)
            if target is None or target.type != "categorical":
                raise ValueError(
                    f"features[{i}].shared_embedding: {feature.shared_embedding!r} is not a "
                    f"categorical feature of this schema (feature {feature.name!r})"
                )
        for i, feature in enumerate(self.features):
            if feature.pooling != "attention":
                continue
            try:
                attention_query(feature, self.features)
            except ValueError as err:
                key = "query" if feature.query is not None else "pooling"
                raise ValueError(f"features[{i}].{key}: {err}") from None
        labels = {t.label: t for t in self.tasks}
        for i, task in enumerate(self.tasks):
            if task.label in by_name:
                raise ValueError(
                    f"tasks[{i}].label: {task.label!r} is also a feature; labels are never features"
                )
            if task.condition is None:
                continue
            parent = labels.get(task.condition)
            if parent is None or parent.type != "binary" or parent is task:
                raise ValueError(
                    f"tasks[{i}].condition: {task.condition!r} is not the label of another binary "
                    f"task (task {task.name!r})"
                )
        tasks = {t.name: t for t in self.tasks}
        for i, product in enumerate(self.products):
            for name in product.of:
                if name not in tasks or tasks[name].type != "binary":
                    raise ValueError(
                        f"products[{i}].of: {name!r} is not a binary task (product {product.name!r})"
                    )
                if tasks[name].auxiliary:
                    raise ValueError(
                        f"products[{i}].of: {name!r} is an auxiliary task, which is never served "
                        f"(product {product.name!r})"
                    )
        if self.tasks and all(task.auxiliary for task in self.tasks):
            raise ValueError("tasks: every task is auxiliary; at least one must be served")
        for entity, key in (("user", self.keys.user), ("item", self.keys.item)):
            if self.entity_features(entity) and key not in by_name:  # type: ignore[arg-type]
                raise ValueError(f"keys.{entity}: {key!r} is not a feature of this schema")
        return self

    # ---- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read and validate a schema.yaml; a SchemaError names the file, key and feature."""
        return cls.from_dict(read_yaml(path, "schema", SchemaError), source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "schema") -> Schema:
        expected = "a mapping with 'features' and 'tasks'"
        return validate_mapping(cls, raw, source, SchemaError, expected)

    def to_dict(self) -> dict[str, Any]:
        """The schema as plain data (what `metadata.json` carries); round-trips through from_dict."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    # ---- queries -------------------------------------------------------------------------------

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"no feature {name!r}; features are {[f.name for f in self.features]}")

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r}; tasks are {[t.name for t in self.tasks]}")

    def entity_features(self, entity: Entity) -> list[Feature]:
        return [f for f in self.features if f.entity == entity]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def output_names(self) -> list[str]:
        """Every score an export serves: the tasks that are not auxiliary, then the products, in
        schema order. (The Keras model also returns the auxiliary tasks' scores, for training
        and its test metrics.)"""
        return [t.name for t in self.tasks if not t.auxiliary] + [p.name for p in self.products]

    @property
    def auxiliary_outputs(self) -> list[str]:
        return [t.name for t in self.tasks if t.auxiliary]

    def condition_pairs(self) -> dict[str, tuple[str, str] | None]:
        """Per product, (the parent task, the task conditioned on it) when it pairs a task with
        the task whose label is its condition (ctcvr of [ctr, cvr]: ("ctr", "cvr")); else None."""
        pairs: dict[str, tuple[str, str] | None] = {}
        for product in self.products:
            tasks = [self.task(name) for name in product.of]
            children = [t for t in tasks if t.condition is not None]
            parents = [t for t in tasks if t.condition is None]
            paired = len(tasks) == 2 and len(children) == 1 and len(parents) == 1
            if paired and children[0].condition == parents[0].label:
                pairs[product.name] = (parents[0].name, children[0].name)
            else:
                pairs[product.name] = None
        return pairs

    def scoring(self) -> dict[str, Scoring]:
        """Per output (every task, auxiliary ones too, then every product), its labels and rows:
        the one rule the training loss (`ranker.tasks`) and the offline metrics
        (`training.metrics`) both read."""
        scoring = {
            task.name: Scoring(labels=(task.label,), condition=task.condition)
            for task in self.tasks
        }
        for product in self.products:
            scoring[product.name] = Scoring(labels=tuple(self.task(n).label for n in product.of))
        return scoring

    @property
    def label_columns(self) -> list[str]:
        return [t.label for t in self.tasks]


def table_owner(feature: Feature, features: Sequence[Feature]) -> Feature:
    """The feature whose embedding table `feature` looks up in: itself, or the one it shares."""
    if feature.shared_embedding is None:
        return feature
    for other in features:
        if other.name == feature.shared_embedding and other.type == "categorical":
            return other
    raise ValueError(
        f"feature {feature.name!r} shares the table of {feature.shared_embedding!r}, "
        "which is not a categorical feature here"
    )


def attention_query(feature: Feature, features: Sequence[Feature]) -> Feature:
    """The item categorical whose embedding queries the attention pooling of sequence `feature`.

    `feature.query` if set, else the feature whose table it shares; a ValueError names the feature
    when there is none, or when it is not an item categorical of the sequence's embedding_dim.
    """
    name = feature.query if feature.query is not None else feature.shared_embedding
    if name is None:
        raise ValueError(
            f"sequence {feature.name!r} has 'pooling: attention' but no query: set 'query' to an "
            "item categorical feature (or share that feature's table with 'shared_embedding')"
        )
    by_name = {f.name: f for f in features}
    query = by_name.get(name)
    if query is None or query.type != "categorical" or query.entity != "item":
        raise ValueError(
            f"{name!r} is not an item categorical feature, so it cannot query the attention "
            f"pooling of sequence {feature.name!r}"
        )
    dim = table_owner(feature, features).embedding_dim
    if query.embedding_dim != dim:
        raise ValueError(
            f"query {name!r} has embedding_dim {query.embedding_dim} but sequence "
            f"{feature.name!r} embeds into {dim}; attention needs them equal"
        )
    return query


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: name {name!r} is used twice")
        seen.add(name)
