"""Data mtrank did not make: tables without users or items, only context, only regression, three
tasks. Each trains, evaluates, exports and scores through the service's `:predict` route.

And nothing is lost after `fit`: a test split that breaks evaluation leaves the trained weights
on disk, and `--resume` evaluates and exports them without training again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings
from training.cli import main

ROWS = {"train": 1200, "val": 300, "test": 300}
HPARAMS = {"num_experts": 2, "expert_units": [8], "tower_units": [4]}


def _context(rng: np.random.Generator, n: int) -> dict[str, Any]:
    return {
        "device": rng.choice(["ios", "android", "web"], n),
        "region": rng.choice([f"r{k}" for k in range(30)], n),
        "hour": rng.integers(0, 24, n),
        "age": rng.normal(40, 12, n).astype(np.float32),
        "income": rng.lognormal(3, 1, n),
    }


CONTEXT_FEATURES = [
    {"name": "device", "type": "categorical", "entity": "context", "vocabulary": ["ios", "android", "web"]},
    {"name": "region", "type": "categorical", "entity": "context", "num_buckets": 64},
    {"name": "hour", "type": "categorical", "entity": "context", "num_buckets": 32},
    {"name": "age", "type": "numeric", "entity": "context"},
    {"name": "income", "type": "numeric", "entity": "context", "transform": "log1p"},
]  # fmt: skip


def _binary(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def _signal(columns: dict[str, Any]) -> np.ndarray:
    return (
        (columns["device"] == "ios") * 1.0
        + (columns["age"] - 40) / 12
        - 0.5 * np.log1p(columns["income"])
        + 1.0
    )


def _write(
    directory: Path,
    schema: dict[str, Any],
    table_of: Any,
    tables: dict[str, pa.Table] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in ROWS.items():
        pq.write_table(pa.table(table_of(rng, n)), directory / f"{split}.parquet")
    for name, table in (tables or {}).items():
        pq.write_table(table, directory / name)
    (directory / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    return directory


def _context_only(directory: Path) -> Path:
    """Only context features (no ids at all), two binary tasks: the census-like table."""

    def table(rng: np.random.Generator, n: int) -> dict[str, Any]:
        columns = _context(rng, n)
        signal = 2.0 * _signal(columns)
        return {**columns, "bought": _binary(rng, signal), "churned": _binary(rng, 0.5 - signal)}

    schema = {
        "features": CONTEXT_FEATURES,
        "tasks": [{"name": "bought", "label": "bought"}, {"name": "churned", "label": "churned"}],
    }
    return _write(directory, schema, table)


def _regression_only(directory: Path) -> Path:
    """Only regression tasks over numeric inputs (the MMoE paper's synthetic shape)."""

    def table(rng: np.random.Generator, n: int) -> dict[str, Any]:
        x = rng.normal(size=(n, 4)).astype(np.float32)
        columns = {f"x{k}": x[:, k] for k in range(4)}
        y1 = x @ np.array([1.0, 0.5, 0.0, 0.0]) + np.sin(x[:, 0])
        y2 = x @ np.array([0.8, 0.0, 0.6, 0.0]) + np.sin(x[:, 2])
        return {**columns, "y1": y1.astype(np.float32), "y2": y2.astype(np.float32)}

    schema = {
        "features": [{"name": f"x{k}", "type": "numeric", "entity": "context"} for k in range(4)],
        "tasks": [
            {"name": "y1", "label": "y1", "type": "regression"},
            {"name": "y2", "label": "y2", "type": "regression"},
        ],
    }
    return _write(directory, schema, table)


def _three_tasks(directory: Path) -> Path:
    """Three tasks of two kinds (binary, conditioned binary, regression) and a product."""

    def table(rng: np.random.Generator, n: int) -> dict[str, Any]:
        columns = _context(rng, n)
        signal = _signal(columns)
        click = _binary(rng, signal - 1.0)
        buy = click * _binary(rng, signal)
        dwell = np.maximum(0.0, 30 + 10 * signal + rng.normal(0, 5, n)).astype(np.float32)
        return {**columns, "click": click, "buy": buy, "dwell": dwell}

    schema = {
        "features": CONTEXT_FEATURES,
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "buy", "condition": "click"},
            {"name": "dwell", "label": "dwell", "type": "regression"},
        ],
        "products": [{"name": "ctcvr", "of": ["ctr", "cvr"]}],
    }
    return _write(directory, schema, table)


def _entity_only(directory: Path, entity: str) -> Path:
    """Features of one entity only (no user key, or no item key), joined from its table."""
    key = f"{entity}_id"
    ids = [f"{entity[0]}{k}" for k in range(50)]
    quality = np.linspace(-1.5, 1.5, 50)
    entity_table = pa.table(
        {key: ids, "kind": [f"k{k % 5}" for k in range(50)], "score": quality.astype(np.float32)}
    )

    def table(rng: np.random.Generator, n: int) -> dict[str, Any]:
        which = rng.integers(0, 50, n)
        device = rng.choice(["ios", "android", "web"], n)
        click = _binary(rng, quality[which] + (device == "ios") - 1.0)
        return {key: np.array(ids)[which], "device": device, "click": click}

    schema = {
        "features": [
            {"name": key, "type": "categorical", "entity": entity, "num_buckets": 128},
            {"name": "kind", "type": "categorical", "entity": entity, "vocabulary": [f"k{k}" for k in range(5)]},
            {"name": "score", "type": "numeric", "entity": entity},
            {"name": "device", "type": "categorical", "entity": "context", "vocabulary": ["ios", "android", "web"]},
        ],
        "tasks": [{"name": "ctr", "label": "click"}],
    }  # fmt: skip
    return _write(directory, schema, table, {f"{entity}s.parquet": entity_table})


SHAPES = {
    "context_only": _context_only,
    "regression_only": _regression_only,
    "three_tasks": _three_tasks,
    "no_user_key": lambda d: _entity_only(d, "item"),
    "no_item_key": lambda d: _entity_only(d, "user"),
}


def _train(data: Path, models: Path, capsys: pytest.CaptureFixture, *extra: str) -> dict:
    config = data / "train.yaml"
    config.write_text(yaml.safe_dump({"hparams": HPARAMS}))
    args = ["train", "--data", str(data), "--model", "mmoe", "--out", str(models)]
    code = main([*args, "--epochs", "2", "--config", str(config), "--quiet", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_table_of_this_shape_trains_evaluates_exports_and_predicts(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = SHAPES[shape](tmp_path / "data")
    schema = yaml.safe_load((data / "schema.yaml").read_text())
    summary = _train(data, tmp_path / "models", capsys)
    outputs = [t["name"] for t in schema["tasks"]] + [p["name"] for p in schema.get("products", [])]
    assert sorted(summary["test"]) == sorted(outputs)
    has_users = shape == "no_item_key"  # the only shape with a user column
    for task in schema["tasks"]:
        metrics = summary["test"][task["name"]]
        if task.get("type") == "regression":
            assert metrics["rmse"] > 0 and "auc" not in metrics
        else:
            assert 0.0 <= metrics["auc"] <= 1.0
            assert ("gauc" in metrics) == has_users, metrics  # GAUC only where users are

    # evaluate reads the export alone and agrees with train's test metrics
    assert main(["evaluate", "--model", summary["path"], "--data", str(data / "test.parquet")]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name, metrics in summary["test"].items():
        for metric, value in metrics.items():
            assert evaluated[name][metric] == pytest.approx(value, abs=1e-5, nan_ok=True)

    # the service scores raw rows through TF Serving's :predict format
    rows = pq.read_table(data / "test.parquet").slice(0, 5).to_pylist()
    features = {f["name"] for f in schema["features"]}
    instances = [{k: v for k, v in row.items() if k in features} for row in rows]
    settings = Settings(models_dir=tmp_path / "models", poll_interval_s=0)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/models/mmoe:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 5 and set(predictions[0]) == set(outputs)
    for task in schema["tasks"]:
        values = np.array([p[task["name"]] for p in predictions])
        assert np.isfinite(values).all() and len(set(values.round(7))) > 1
        if task.get("type") != "regression":
            assert ((values > 0) & (values < 1)).all()


def test_evaluation_failing_after_fit_keeps_the_weights_and_resume_exports_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _context_only(tmp_path / "data")
    good = tmp_path / "good_test.parquet"
    shutil.copy(data / "test.parquet", good)
    broken = pq.read_table(good).to_pydict()
    broken["bought"][-1] = 2  # a binary label outside {0, 1}: found only while evaluating
    pq.write_table(pa.table(broken), data / "test.parquet")
    config = data / "train.yaml"
    config.write_text(yaml.safe_dump({"hparams": HPARAMS}))
    args = ["train", "--data", str(data), "--model", "mmoe", "--out", str(tmp_path / "models")]
    args += ["--epochs", "2", "--config", str(config)]

    assert main(args) == 2
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if line.startswith("mtrank train: error:")]
    assert len(message) == 1, err
    assert "label column 'bought' has value 2" in message[0]
    assert "the trained weights are kept in" in message[0] and "--resume" in message[0]
    kept = tmp_path / "models" / ".runs" / "mmoe" / "trained"
    assert (kept / "fit.json").exists() and list(kept.glob("weights*"))
    assert not (tmp_path / "models" / "mmoe").exists()  # nothing exported yet
    fit = json.loads((kept / "fit.json").read_text())
    assert fit["epochs_run"] >= 1 and fit["config"]["batch_size"] == 128  # auto, resolved

    shutil.copy(good, data / "test.parquet")  # the user fixes the file
    assert main([*args, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "not training again" in captured.err
    assert not [line for line in captured.err.splitlines() if line.startswith("epoch ")]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["version"] == 1
    metadata = json.loads((Path(summary["path"]) / "metadata.json").read_text())
    assert metadata["epochs_run"] == fit["epochs_run"]
    assert not (tmp_path / "models" / ".runs" / "mmoe").exists()  # cleaned up once exported

    # so the test can fail: the resumed export scores like the weights fit left, not fresh ones
    assert main(["evaluate", "--model", summary["path"], "--data", str(good)]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["bought"]["auc"] > 0.65


def test_a_test_split_missing_a_column_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _context_only(tmp_path / "data")
    table = pq.read_table(data / "test.parquet").drop(["income"])
    pq.write_table(table, data / "test.parquet")
    args = ["train", "--data", str(data), "--model", "mmoe", "--out", str(tmp_path / "m")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "test.parquet: column 'income' is missing (numeric context feature)" in err
    assert not [line for line in err.splitlines() if line.startswith("epoch ")]


def test_an_auxiliary_task_is_trained_and_reported_but_not_served(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`auxiliary: true` (dwell time helping ctr/cvr): in train's test metrics, not in the
    export's outputs, :predict or the monitor."""
    data = _three_tasks(tmp_path / "data")
    schema = yaml.safe_load((data / "schema.yaml").read_text())
    schema["tasks"][2]["auxiliary"] = True
    (data / "schema.yaml").write_text(yaml.safe_dump(schema))
    summary = _train(data, tmp_path / "models", capsys)
    assert sorted(summary["test"]) == ["ctcvr", "ctr", "cvr", "dwell"]  # trained and reported
    assert summary["test"]["dwell"]["rmse"] > 0
    metadata = json.loads((Path(summary["path"]) / "metadata.json").read_text())
    assert metadata["outputs"] == ["ctr", "cvr", "ctcvr"]  # not served
    assert "dwell_weight" in metadata["balancing"]["per_epoch"]  # weighted like any task
    assert main(["evaluate", "--model", summary["path"], "--data", str(data / "test.parquet")]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(evaluated) == ["ctcvr", "ctr", "cvr"]
    rows = pq.read_table(data / "test.parquet").slice(0, 3).to_pylist()
    names = {f["name"] for f in schema["features"]}
    instances = [{k: v for k, v in row.items() if k in names} for row in rows]
    settings = Settings(models_dir=tmp_path / "models", poll_interval_s=0)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/models/mmoe:predict", json={"instances": instances})
    assert response.status_code == 200 and set(response.json()["predictions"][0]) == {
        "ctr",
        "cvr",
        "ctcvr",
    }
    # ...and it is never the early-stopping monitor: one line before any data is read
    config = data / "monitor.yaml"
    config.write_text(yaml.safe_dump({"early_stopping": {"monitor": "val_dwell_loss"}}))
    args = ["train", "--data", str(data), "--model", "mmoe", "--out", str(tmp_path / "m2")]
    assert main([*args, "--config", str(config), "--quiet"]) == 2
    assert "'val_dwell_loss' is auxiliary task 'dwell''s" in capsys.readouterr().err
