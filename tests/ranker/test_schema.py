"""The schema loader: valid files load, every kind of mistake names its key and feature."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ranker.errors import SchemaError
from ranker.schema import Schema, attention_query
from tests.ranker.conftest import CLICK_LOG_SCHEMA


def _with(path: str, value: object) -> dict:
    """The click-log schema with one key replaced, e.g. _with("features.3.num_buckets", -1)."""
    raw = yaml.safe_load(CLICK_LOG_SCHEMA)
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return raw


def test_contract_example_loads_with_outputs_in_order(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(CLICK_LOG_SCHEMA)
    schema = Schema.load(path)
    assert schema.output_names == ["ctr", "cvr", "ctcvr"]
    assert schema.feature("recent_items").shared_embedding == "item_id"
    assert schema.task("cvr").condition == "click"
    assert [f.name for f in schema.entity_features("user")] == ["user_id", "recent_items"]
    assert Schema.from_dict(schema.to_dict()) == schema


def test_round_trip_through_a_file(tmp_path: Path, schema: Schema) -> None:
    schema.dump(tmp_path / "schema.yaml")
    assert Schema.load(tmp_path / "schema.yaml") == schema


@pytest.mark.parametrize(
    ("change", "value", "message"),
    [
        (
            "features.0.num_buckets",
            -1,
            "features[0].num_buckets: must be >= 2 (bucket 0 is reserved for missing values), got -1 (feature 'user_id')",
        ),
        (
            "features.0.num_buckets",
            1,
            "features[0].num_buckets: must be >= 2 (bucket 0 is reserved for missing values), got 1",
        ),
        ("features.1.colour", "red", "features[1].colour: unknown key (feature 'item_id')"),
        (
            "features.3.vocabulary",
            ["a"],
            "features[3]: key 'vocabulary' does not apply to a numeric feature",
        ),
        ("features.2.type", "categoricl", "features[2].type: Input should be"),
        (
            "features.2.vocabulary",
            ["ios", "ios"],
            "features[2].vocabulary: has duplicate entries ['ios']",
        ),
        (
            "features.4.max_length",
            0,
            "features[4].max_length: must be > 0, got 0 (feature 'recent_items')",
        ),
        (
            "features.4.shared_embedding",
            "price",
            "features[4].shared_embedding: 'price' is not a categorical",
        ),
        (
            "tasks.1.condition",
            "purchase",
            "tasks[1].condition: 'purchase' is not the label of another",
        ),
        ("tasks.0.type", "multiclass", "tasks[0].type: Input should be 'binary' or 'regression'"),
        ("products.0.of", ["ctr", "dwell"], "products[0].of: 'dwell' is not a binary task"),
        ("tasks.0.label", "price", "tasks[0].label: 'price' is also a feature"),
        ("extra", 1, "extra: unknown key"),
    ],
)
def test_bad_schemas_name_the_key(change: str, value: object, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        Schema.from_dict(_with(change, value), source="schema.yaml")
    assert str(err.value).startswith("schema.yaml: "), str(err.value)
    assert message in str(err.value)


def test_duplicate_feature_names_are_rejected() -> None:
    raw = yaml.safe_load(CLICK_LOG_SCHEMA)
    raw["features"].append(dict(raw["features"][0]))
    with pytest.raises(SchemaError, match="features: name 'user_id' is used twice"):
        Schema.from_dict(raw)


def test_a_categorical_needs_exactly_one_table_source() -> None:
    raw = _with("features.0.vocabulary", ["a", "b"])
    with pytest.raises(
        SchemaError, match=r"features\[0\]: a categorical feature needs exactly one of"
    ):
        Schema.from_dict(raw)


def test_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="no such schema file"):
        Schema.load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("features:\n  - {name: a, type: numeric\n")
    with pytest.raises(SchemaError, match=r"broken.yaml:\d+: not valid YAML"):
        Schema.load(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SchemaError, match="expected a mapping"):
        Schema.load(listing)


def test_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    from ranker.errors import ConfigError
    from training.config import TrainConfig

    with pytest.raises(SchemaError, match=r"unreadable schema file"):
        Schema.load(tmp_path)  # a directory
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"config.yaml: unreadable config file"):
        TrainConfig.load(binary)


def test_missing_values_by_type(schema: Schema) -> None:
    assert schema.feature("user_id").missing_value == ""
    assert schema.feature("price").missing_value == 0.0
    assert schema.feature("recent_items").missing_value == []


def test_schema_module_imports_no_tensorflow() -> None:
    import subprocess
    import sys

    code = "import ranker.schema, sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _recent_items(**keys: object) -> dict:
    """The click-log schema with recent_items (features[4]) given `keys`; None removes a key."""
    raw = yaml.safe_load(CLICK_LOG_SCHEMA)
    recent = raw["features"][4]
    for key, value in keys.items():
        if value is None:
            recent.pop(key, None)
        else:
            recent[key] = value
    return raw


# recent_items with a table of its own, queried by item_id
OWN_TABLE = {
    "pooling": "attention",
    "query": "item_id",
    "shared_embedding": None,
    "num_buckets": 64,
}


def test_sequence_pooling_defaults_to_mean_and_attention_queries_the_shared_table() -> None:
    plain = Schema.from_dict(yaml.safe_load(CLICK_LOG_SCHEMA))
    assert plain.feature("recent_items").pooling == "mean"
    assert "pooling" not in plain.to_dict()["features"][4]  # existing schemas dump unchanged
    schema = Schema.from_dict(_recent_items(pooling="attention"))
    recent = schema.feature("recent_items")
    assert recent.pooling == "attention" and recent.query is None
    assert attention_query(recent, schema.features).name == "item_id"
    assert Schema.from_dict(schema.to_dict()) == schema
    own_table = Schema.from_dict(_recent_items(**OWN_TABLE, embedding_dim=4))
    recent = own_table.feature("recent_items")
    assert attention_query(recent, own_table.features).name == "item_id"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"pooling": "max"},
            "features[4].pooling: Input should be 'mean' or 'attention', got 'max' "
            "(feature 'recent_items')",
        ),
        ({"query": "item_id"}, "features[4]: key 'query' needs 'pooling: attention'"),
        (
            {"pooling": "attention", "query": "user_id"},
            "features[4].query: 'user_id' is not an item categorical feature",
        ),
        (
            {"pooling": "attention", "query": "price"},
            "features[4].query: 'price' is not an item categorical feature",
        ),
        (
            {"pooling": "attention", "query": "colour"},
            "features[4].query: 'colour' is not an item categorical feature, so it cannot query "
            "the attention pooling of sequence 'recent_items'",
        ),
        (
            {"pooling": "attention", "shared_embedding": None, "num_buckets": 64},
            "features[4].pooling: sequence 'recent_items' has 'pooling: attention' but no query",
        ),
        (
            dict(OWN_TABLE, embedding_dim=8),
            "features[4].query: query 'item_id' has embedding_dim 4 but sequence 'recent_items' "
            "embeds into 8; attention needs them equal",
        ),
    ],
)
def test_bad_attention_pooling_names_the_feature(keys: dict, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        Schema.from_dict(_recent_items(**keys), source="schema.yaml")
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("key", ["pooling", "query"])
def test_pooling_keys_apply_to_sequences_only(key: str) -> None:
    with pytest.raises(SchemaError, match=f"key '{key}' does not apply to a categorical feature"):
        Schema.from_dict(_with(f"features.1.{key}", "attention" if key == "pooling" else "item_id"))


def test_scoring_says_each_outputs_labels_and_rows() -> None:
    """One rule for the loss and the metrics: a task's label on its condition's rows, a product
    of its tasks' labels on every row."""
    from ranker.schema import Scoring
    from tests.ranker.conftest import click_log_schema

    scoring = click_log_schema().scoring()
    assert list(scoring) == ["ctr", "cvr", "ctcvr"]
    assert scoring["ctr"] == Scoring(labels=("click",), condition=None)
    assert scoring["cvr"] == Scoring(labels=("conversion",), condition="click")
    assert scoring["ctcvr"] == Scoring(labels=("click", "conversion"), condition=None)


def test_an_auxiliary_task_is_never_served() -> None:
    from tests.ranker.conftest import click_log_schema

    raw = click_log_schema().to_dict()
    raw["tasks"].append(
        {"name": "dwell", "label": "dwell", "type": "regression", "auxiliary": True}
    )
    schema = Schema.from_dict(raw)
    assert schema.output_names == ["ctr", "cvr", "ctcvr"] and schema.auxiliary_outputs == ["dwell"]
    assert list(schema.scoring()) == ["ctr", "cvr", "dwell", "ctcvr"]  # trained and measured
    raw["tasks"][1]["auxiliary"] = True  # cvr auxiliary, but ctcvr = ctr * cvr is served
    with pytest.raises(SchemaError, match=r"products\[0\].of: 'cvr' is an auxiliary task"):
        Schema.from_dict(raw)
    raw = {**raw, "products": [], "tasks": [{**t, "auxiliary": True} for t in raw["tasks"]]}
    with pytest.raises(SchemaError, match="every task is auxiliary"):
        Schema.from_dict(raw)
