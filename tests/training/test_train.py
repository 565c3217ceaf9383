"""`mtrank train` and `mtrank evaluate` end to end on small synthetic logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ranker  # noqa: F401
from ranker.keras_compat import tf
from ranker.schema import Schema
from training.cli import main
from training.config import TrainConfig
from training.data import ReadOptions, make_dataset
from training.evaluation import keras_scorer, saved_model_scorer, score_dataset
from training.trainer import train

FAST = {
    "batch_size": 1024,
    "epochs": 2,
    "hparams": {"num_experts": 2, "expert_units": [16], "tower_units": [8]},
}


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    models = tmp_path_factory.mktemp("models")
    config = TrainConfig.model_validate(FAST)
    first = train(synth_dir, "mmoe", models, config, verbose=False)
    return {"models": models, "result": first, "config": config}


def test_export_layout_and_metadata(trained: dict) -> None:
    result = trained["result"]
    assert result.version == 1 and result.path == trained["models"] / "mmoe" / "1"
    assert (result.path / "saved_model.pb").exists() and (result.path / "variables").is_dir()
    metadata = json.loads((result.path / "metadata.json").read_text())
    assert metadata["outputs"] == ["ctr", "cvr", "ctcvr"]
    assert metadata["inputs"]["recent_items"] == {"dtype": "string", "shape": [None, None]}
    assert metadata["versions"]["tensorflow"] == tf.__version__
    assert len(metadata["data_fingerprint"]) == 64
    assert metadata["test_metrics"]["ctr"]["count"] > 0
    assert metadata["hparams"]["num_experts"] == 2
    assert not [p for p in (trained["models"] / "mmoe").iterdir() if p.name.startswith(".export")]


def test_keras_savedmodel_and_evaluate_agree(
    trained: dict, synth_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    result = trained["result"]
    schema = Schema.load(synth_dir / "schema.yaml")
    # evaluate reproduces train's test metrics from the export alone
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(trained["models"] / "mmoe"),
                "--data",
                str(synth_dir / "test.parquet"),
            ]
        )
        == 0
    )
    evaluated = _last_json(capsys.readouterr().out)
    for task, values in result.test.items():
        for metric, value in values.items():
            assert evaluated[task][metric] == pytest.approx(value, abs=1e-6, nan_ok=True), (
                task,
                metric,
            )
    # and the reloaded SavedModel scores test rows as the Keras model did
    dataset = make_dataset(synth_dir / "test.parquet", schema, ReadOptions(batch_size=4096))
    served, _ = score_dataset(saved_model_scorer(result.path), dataset)
    model_dir = result.path
    assert (
        set(served) == {"ctr", "cvr", "ctcvr"} and len(served["ctr"]) == evaluated["ctr"]["count"]
    )
    assert model_dir.exists()


def test_keras_and_savedmodel_scores_match(synth_dir: Path, tmp_path: Path) -> None:
    from ranker.contract import TrainingSummary
    from training.export import write_version
    from training.trainer import build_model

    schema = Schema.load(synth_dir / "schema.yaml")
    model = build_model(
        schema, "ple", TrainConfig.model_validate({"hparams": {"expert_units": [8]}})
    )
    dataset = make_dataset(synth_dir / "test.parquet", schema, ReadOptions(batch_size=2048))
    model.adapt(dataset.map(lambda features, labels: features).take(1))
    model.fit(
        make_dataset(synth_dir / "train.parquet", schema, ReadOptions(batch_size=2048)).take(3),
        verbose=0,
    )
    summary = TrainingSummary(
        architecture="ple",
        train_config={},
        hparams={},
        test_metrics={},
        data={},
        placement="CPU",
        precision="float32",
        epochs_run=1,
    )
    _, path = write_version(model, tmp_path / "ple", summary, [synth_dir / "schema.yaml"])
    keras_scores, _ = score_dataset(keras_scorer(model), dataset)
    served, _ = score_dataset(saved_model_scorer(path), dataset)
    for name in schema.output_names:
        np.testing.assert_allclose(served[name], keras_scores[name], atol=1e-5)


def test_versions_increase(trained: dict, synth_dir: Path, capsys: pytest.CaptureFixture) -> None:
    config = trained["config"].model_copy(update={"epochs": 1})
    second = train(synth_dir, "mmoe", trained["models"], config, verbose=False)
    assert second.version == 2
    assert (
        main(["evaluate", "--model", str(second.path), "--data", str(synth_dir / "val.parquet")])
        == 0
    )
    assert set(_last_json(capsys.readouterr().out)) == {"ctr", "cvr", "ctcvr"}


def test_train_cli_prints_the_contract_json_last(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "hparams: {base_config: {bottom_units: [16]}, tower_units: [8]}\nbatch_size: 2048\n"
    )
    args = [
        "train",
        "--data",
        str(synth_dir),
        "--model",
        "esmm",
        "--out",
        str(tmp_path / "m"),
        "--epochs",
        "1",
        "--config",
        str(config),
        "--quiet",
    ]
    assert main(args) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["model"] == "esmm" and summary["version"] == 1
    assert Path(summary["path"]) == (tmp_path / "m" / "esmm" / "1").resolve()
    assert set(summary["test"]) == {"ctr", "cvr", "ctcvr"}
    assert {"auc", "logloss"} <= set(summary["test"]["ctr"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "mmoe", "--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--model", "nope"], "unknown architecture 'nope'; known: single_task"),
        (["--model", "mmoe", "--config", "CONFIG"], "config.yaml: optimizer.lr: unknown key"),
    ],
)
def test_train_cli_errors_are_one_line(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("optimizer: {lr: 0.1}\n")
    args = [a.replace("CONFIG", str(config)) for a in args]
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "m"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_an_early_stopping_monitor_the_model_never_logs_is_an_error(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("early_stopping: {monitor: val_cvr_auc}\n")  # esmm logs ctcvr, not cvr
    args = ["--model", "esmm", "--config", str(config), "--out", str(tmp_path / "m")]
    assert main(["train", "--data", str(synth_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "early_stopping.monitor: 'val_cvr_auc' is not logged by this model" in err
    assert "'val_ctcvr_auc'" in err


def test_evaluate_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--model", str(tmp_path), "--data", "x.parquet"]) == 2
    assert "no exported model" in capsys.readouterr().err


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_resume_after_a_kill_loses_no_finished_epoch(synth_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "batch_size: 512\nearly_stopping: {enabled: false}\nhparams: {bottom_units: [16]}\n"
        "loss_weighting: dwa\n"  # a strategy with state: DWA's loss history
    )
    base = [
        sys.executable,
        "-m",
        "training.cli",
        "train",
        "--data",
        str(synth_dir),
        "--model",
        "shared_bottom",
        "--out",
        str(tmp_path / "m"),
        "--epochs",
        "3",
        "--config",
        str(config),
    ]
    proc = subprocess.Popen(
        base, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env()
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        if line.startswith("epoch 1/3"):
            break
        assert time.monotonic() < deadline, "no epoch finished in time"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "m" / ".runs" / "shared_bottom" / "backup").exists()
    resumed = subprocess.run(
        [*base, "--resume"], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = [line.split()[1] for line in resumed.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs[0] in ("2/3", "3/3") and epochs[-1] == "3/3", epochs
    metadata = json.loads((tmp_path / "m" / "shared_bottom" / "1" / "metadata.json").read_text())
    assert metadata["epochs_run"] == len(epochs)
    # DWA's epoch-3 weights come from epochs 1 and 2: its state came back with the backup (a
    # fresh state would have seen one epoch, and DWA keeps the weights at 1 until it has two)
    weights = metadata["balancing"]["per_epoch"]["ctr_weight"]
    assert weights[-1] != pytest.approx(1.0, abs=1e-4), weights


def test_an_attention_schema_trains_exports_and_serves_the_keras_scores(
    synth_dir: Path, tmp_path: Path
) -> None:
    """`pooling: attention` on recent_items goes through train's export and its metadata.json."""
    data = tmp_path / "data"
    data.mkdir()
    for path in synth_dir.iterdir():
        if path.name != "schema.yaml":
            (data / path.name).symlink_to(path)
    raw = Schema.load(synth_dir / "schema.yaml").to_dict()
    for feature in raw["features"]:
        if feature["name"] == "recent_items":
            feature["pooling"] = "attention"
    Schema.from_dict(raw).dump(data / "schema.yaml")
    config = TrainConfig.model_validate({**FAST, "epochs": 1})
    result = train(data, "mmoe", tmp_path / "m", config, verbose=False)
    metadata = json.loads((result.path / "metadata.json").read_text())
    schema = Schema.from_dict(metadata["schema"])
    assert schema.feature("recent_items").pooling == "attention"
    dataset = make_dataset(data / "test.parquet", schema, ReadOptions(batch_size=4096))
    served, _ = score_dataset(saved_model_scorer(result.path), dataset)
    for name in schema.output_names:
        np.testing.assert_allclose(served[name], result.test_scores[name], atol=1e-5)


def test_train_exports_calibrated_scores_with_the_raw_ones_beside_them(trained: dict) -> None:
    result = trained["result"]
    metadata = json.loads((result.path / "metadata.json").read_text())
    calibration = metadata["calibration"]
    assert calibration["method"] == "isotonic" and calibration["negative_sampling_rate"] == 1.0
    assert set(calibration["tasks"]) == {"ctr", "cvr", "ctcvr"}
    assert not calibration["tasks"]["ctr"]["corrected"]
    for split in ("val", "test"):
        assert set(calibration["tasks"]["ctr"][split]) == {"before", "after"}
    # test metrics are the exported scores'; the raw scores' sit beside them
    assert metadata["test_metrics"]["ctr"]["ece"] == pytest.approx(result.test["ctr"]["ece"])
    assert set(result.test["ctr"]["raw"]) == {"ece", "calibration", "auc", "logloss"}
    signature = tf.saved_model.load(str(result.path)).signatures["serving_default"]
    assert set(signature.structured_outputs) == {
        "ctr",
        "cvr",
        "ctcvr",
        "raw_ctr",
        "raw_cvr",
        "raw_ctcvr",
    }
