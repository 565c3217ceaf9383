"""End to end on a tiny service: `mtrank serve` with two variants and an exposure log, `mtrank
simulate` plays a few hundred requests against it, `mtrank ab-report` joins the two logs.

The two variants serve the same SavedModel under two names, so the test is about the plumbing
(every request logged and joined, rows per variant with intervals), not about which one wins.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.serving.conftest import cli, free_port, served

REQUESTS, TOP_K = 200, 5


def test_simulate_then_ab_report(export: Any, embedded_data: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    for name in ("mmoe", "twin"):
        shutil.copytree(export.version_dir, models / name / "1")
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        "experiments:\n"
        "  - name: gates\n"
        "    salt: e2e\n"
        "    variants:\n"
        "      - {name: control, model: mmoe, weight: 50}\n"
        "      - {name: treatment, model: twin, weight: 50}\n"
    )
    exposures, feedback = tmp_path / "exposures.jsonl", tmp_path / "feedback.jsonl"
    flags = ["--store", embedded_data, "--experiments", experiments, "--exposure-log", exposures]
    with served(models, *flags) as url:
        done = cli(
            "simulate", "--url", url, "--data", embedded_data, "--requests", REQUESTS,
            "--top-k", TOP_K, "--candidates", 50, "--feedback", feedback, "--seed", 7,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["requests"], summary["failed"]) == (REQUESTS, 0)
    assert set(summary["variants"]) == {"gates/control", "gates/treatment"}
    shown = [json.loads(line) for line in feedback.read_text().splitlines()]
    assert len(shown) == REQUESTS * TOP_K
    assert all(row["conversion"] <= row["click"] for row in shown)
    assert {row["position"] for row in shown} == set(range(1, TOP_K + 1))
    assert all(0 < row["p_click"] < 1 and 0 < row["p_conversion"] < 1 for row in shown)
    logged = [json.loads(line) for line in exposures.read_text().splitlines()]
    assert len(logged) == REQUESTS  # every scored request, after a clean shutdown
    assert {line["request_id"] for line in logged} == {row["request_id"] for row in shown}

    out = tmp_path / "report"
    report_run = cli("ab-report", "--exposures", exposures, "--feedback", feedback, "--out", out)
    assert report_run.returncode == 0, report_run.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["impressions_joined"] == REQUESTS * TOP_K
    assert report["inputs"]["unmatched_feedback"] == 0
    gates = report["experiments"]["gates"]
    assert set(gates["variants"]) == {"control", "treatment"}
    for name, row in gates["variants"].items():
        assert row["requests"] == summary["variants"][f"gates/{name}"]["requests"] > 0
        assert row["impressions"] == row["requests"] * TOP_K
        for metric in ("ctr", "ctcvr"):
            cell = row[metric]
            assert cell["low"] <= cell["value"] <= cell["high"], (name, metric, cell)
        assert row["true"]["ctcvr"] == pytest.approx(
            summary["variants"][f"gates/{name}"]["true_ctcvr"], abs=1e-5
        )
        assert set(row["tasks"]) == {"ctr", "cvr", "ctcvr"}
    assert "p_value" in gates["variants"]["treatment"]["lift"]["ctcvr"]
    assert (out / "report.html").stat().st_size > 1000


def test_simulate_errors_are_one_line(export: Any, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cases = [
        (["--data", tmp_path], "no users.parquet"),
        (["--data", export.data, "--top-k", "0"], "--top-k must be >= 1"),
        (["--data", export.data, "--retries"], "unrecognized arguments"),
        (["--data", export.data], "cannot reach the service"),
    ]
    for extra, message in cases:
        done = cli(
            "simulate", "--url", f"http://127.0.0.1:{port}", "--requests", 20,
            "--feedback", tmp_path / "fb.jsonl", *extra, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr.strip().splitlines()[-1], done.stderr
