"""`mtrank train --init-from`: a two-task export extended by a third task keeps the first two's
weights (the same scores before any training) and trains the third; what cannot match is one
line naming the difference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ranker.keras_compat import tf
from ranker.model import RankingModel
from ranker.schema import Schema
from training.cli import main
from training.config import TrainConfig
from training.data import ReadOptions, make_dataset
from training.trainer import train
from training.warm_start import IncompatibleInit, warm_start

HPARAMS = {"num_experts": 2, "expert_units": [16], "tower_units": [8]}
FAST = {"batch_size": 1024, "epochs": 2, "hparams": HPARAMS}
# a third task the small log can teach in two epochs (the click, under its own tower); conversion
# over all impressions has ~100 positives here, too few to show a tower learned anything
PURCHASE = {"name": "engaged", "label": "click", "type": "binary"}


@pytest.fixture(scope="module")
def two_tasks(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    train(synth_dir, "mmoe", models, TrainConfig.model_validate(FAST), verbose=False)
    return models / "mmoe"


def _with_schema(synth_dir: Path, out: Path, change) -> Path:
    """The synthetic splits under `out`, with schema.yaml changed by `change(raw)`."""
    out.mkdir()
    for path in synth_dir.iterdir():
        if path.name != "schema.yaml":
            (out / path.name).symlink_to(path)
    raw = yaml.safe_load((synth_dir / "schema.yaml").read_text())
    change(raw)
    (out / "schema.yaml").write_text(yaml.safe_dump(raw))
    return out


def _batch(data: Path, schema: Schema) -> dict:
    options = ReadOptions(batch_size=512, labels=False)
    return next(iter(make_dataset(data / "val.parquet", schema, options)))


def test_a_new_task_starts_fresh_and_the_old_tasks_score_as_before(
    two_tasks: Path, synth_dir: Path, tmp_path: Path
) -> None:
    data = _with_schema(synth_dir, tmp_path / "data", lambda raw: raw["tasks"].append(PURCHASE))
    schema = Schema.load(data / "schema.yaml")
    features = _batch(data, schema)
    model = RankingModel(schema, "mmoe", HPARAMS)
    model(features)
    before = model(features)
    warm = warm_start(model, two_tasks, features)

    assert warm.source == two_tasks / "1"
    assert warm.fresh and all("engaged" in key or "gates/2" in key for key in warm.fresh)
    assert any(key.startswith("towers/engaged/") for key in warm.fresh)
    assert warm.copied > 0 and "ctr" in warm.test_before
    served = tf.saved_model.load(str(two_tasks / "1")).signatures["serving_default"]
    exported = served(**features)
    after = model(features)
    for name in ("ctr", "cvr", "ctcvr"):
        # the export's model scores (raw_: before the calibration the export adds)
        raw = exported[f"raw_{name}"].numpy()
        np.testing.assert_allclose(after[name].numpy(), raw, atol=1e-6)
        # so the test can fail: the fresh model scored otherwise
        assert not np.allclose(before[name].numpy(), raw, atol=1e-3)


def test_train_init_from_reports_the_old_tasks_before_and_trains_the_new_one(
    two_tasks: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _with_schema(synth_dir, tmp_path / "data", lambda raw: raw["tasks"].append(PURCHASE))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(FAST))
    args = ["--data", str(data), "--model", "mmoe", "--out", str(tmp_path / "m")]
    flags = ["--config", str(config), "--init-from", str(two_tasks), "--quiet"]
    assert main(["train", *args, *flags]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["init_from"]["path"] == str(two_tasks / "1")
    before = summary["init_from"]["test_before"]
    assert set(before) == {"ctr", "cvr", "ctcvr"} and set(summary["test"]) >= {"engaged"}
    assert summary["test"]["engaged"]["auc"] > 0.6
    metadata = json.loads((Path(summary["path"]) / "metadata.json").read_text())
    assert metadata["init_from"]["test_before"]["ctr"]["auc"] == before["ctr"]["auc"]
    assert metadata["init_from"]["fresh"]


@pytest.mark.parametrize(
    ("change", "model", "message"),
    [
        (lambda raw: None, "ple", "trained as 'mmoe', this run trains 'ple'"),
        (
            lambda raw: raw["features"][0].update(embedding_dim=3),
            "mmoe",
            "feature 'user_id' differs",
        ),
        (lambda raw: raw["features"].pop(), "mmoe", "is in the export, not in schema.yaml"),
    ],
)
def test_what_cannot_match_is_one_line_naming_it(
    two_tasks: Path,
    synth_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    change,
    model: str,
    message: str,
) -> None:
    data = _with_schema(synth_dir, tmp_path / "data", change)
    args = ["--data", str(data), "--model", model, "--out", str(tmp_path / "m")]
    assert main(["train", *args, "--init-from", str(two_tasks), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_other_hyperparameters_are_an_error_naming_the_key(
    two_tasks: Path, synth_dir: Path
) -> None:
    schema = Schema.load(synth_dir / "schema.yaml")
    features = _batch(synth_dir, schema)
    model = RankingModel(schema, "mmoe", {**HPARAMS, "num_experts": 3})
    model(features)
    with pytest.raises(IncompatibleInit, match="hyperparameter 'num_experts' is 2 in the export"):
        warm_start(model, two_tasks, features)


def test_an_export_without_its_variables_is_one_line(
    two_tasks: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "broken" / "1"
    shutil.copytree(two_tasks / "1", broken)
    for path in (broken / "variables").iterdir():
        path.unlink()
    args = ["--data", str(synth_dir), "--model", "mmoe", "--out", str(tmp_path / "m")]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(FAST))
    flags = ["--config", str(config), "--init-from", str(broken), "--quiet"]
    assert main(["train", *args, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its variables do not fit the model" in err, err
