"""Scale-out: two MultiWorkerMirroredStrategy workers on loopback train a few steps and export once;
and mixed precision trains and exports float32 scores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from training.distribute import _cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_command(synth_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training.cli",
        "train",
        "--data",
        str(synth_dir),
        "--model",
        "mmoe",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "2048",
        "--quiet",
        *extra,
    ]


def test_tf_config_gives_the_worker_count_and_index(monkeypatch) -> None:
    cluster = {"worker": ["localhost:1", "localhost:2", "localhost:3"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}})
    )
    assert _cluster() == (3, 2)
    monkeypatch.delenv("TF_CONFIG")
    assert _cluster() == (1, 0)


def test_two_workers_on_loopback_train_and_export_one_model(
    synth_dir: Path, tmp_path: Path
) -> None:
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs.append(
            subprocess.Popen(
                _train_command(synth_dir, tmp_path),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=420) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    chief = json.loads(outputs[0][0].strip().splitlines()[-1])
    assert chief["version"] == 1
    versions = sorted(p.name for p in (tmp_path / "mmoe").iterdir())
    assert versions == ["1"], versions  # one export; the other worker's copy was removed
    metadata = json.loads((tmp_path / "mmoe" / "1" / "metadata.json").read_text())
    assert metadata["placement"] == "MultiWorkerMirroredStrategy (2 workers)"


@pytest.mark.parametrize("strategy", ["fixed", "pcgrad", "mgda"])
def test_mixed_precision_trains_and_serves_float32(
    synth_dir: Path, tmp_path: Path, strategy: str
) -> None:
    """Under mixed precision, with a loss-weighting strategy and the two gradient kinds (the
    shared parameters' and the shared representation's gradients, computed in bfloat16)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    config = tmp_path / "config.yaml"
    config.write_text(f"loss_weighting: {strategy}\n")
    run = subprocess.run(
        _train_command(synth_dir, tmp_path, "--mixed-precision", "--config", str(config)),
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    metadata = json.loads((Path(summary["path"]) / "metadata.json").read_text())
    assert metadata["precision"] == "mixed_bfloat16"
    assert metadata["balancing"]["strategy"] == strategy
    assert summary["test"]["ctr"]["auc"] > 0.5
