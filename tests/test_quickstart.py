"""`mtrank quickstart --check`: synth, train MMoE and PLE, materialize, serve, one real HTTP
request answered from the embedded store; a second run skips every step it already did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "training.cli", "quickstart", "--workdir", str(workdir), "--check",
         "--rows", "20000", "--epochs", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_quickstart_check_scores_over_http_and_reruns_from_what_exists(tmp_path: Path) -> None:
    first = quickstart(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    body = json.loads(first.stdout)
    assert body["degraded"] is False and body["missing"]["user"] is False
    assert len(body["scores"]) == 5
    assert {"ctr", "cvr", "ctcvr"} <= set(body["scores"][0])
    for name in ("mmoe", "ple"):
        assert (tmp_path / "models" / name / "1" / "saved_model.pb").exists()
    assert "quickstart check: ok" in first.stderr

    second = quickstart(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("exists, skipped") == 4, second.stderr
    assert not (tmp_path / "models" / "mmoe" / "2").exists()
    assert json.loads(second.stdout)["scores"] == body["scores"]


def test_quickstart_rejects_bad_sizes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "quickstart", "--workdir", str(tmp_path),
         "--rows", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "mtrank quickstart: error: --rows must be >= 1000, got 10"
