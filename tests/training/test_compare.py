"""`mtrank compare` end to end on tiny synthetic logs, its statistics, and its one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.cli import main
from training.compare.gates import ExpertMap, collapse_warnings
from training.compare.intervals import mean_interval, t_quantile

OUTPUTS = ("ctr", "cvr", "ctcvr")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG = """
batch_size: 2048
hparams: {tower_units: [8], expert_units: [16]}
hparams_by_model:
  mmoe: {num_experts: 3}
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare_data")
    args = ["--rows", "20000", "--users", "500", "--items", "200", "--seed", "5"]
    assert main(["synth", "--out", str(out), *args]) == 0
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compare_config") / "compare.yaml"
    path.write_text(CONFIG)
    return path


def _compare(data: Path, models: str, out: Path, *extra: str) -> tuple[int, str]:
    """Runs `mtrank compare` in-process; returns its exit code and stdout."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["compare", "--data", str(data), "--models", models, "--out", str(out), *extra])
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def compared(
    tiny_dir: Path, config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], str]:
    """shared_bottom vs mmoe, 2 seeds, 1 epoch; mmoe gets 3 experts from hparams_by_model."""
    out = tmp_path_factory.mktemp("compare_report")
    extra = ("--runs", "2", "--epochs", "1", "--config", str(config_file), "--quiet")
    code, stdout = _compare(tiny_dir, "shared_bottom,mmoe", out, *extra)
    assert code == 0
    return out, json.loads((out / "report.json").read_text()), stdout


def test_report_has_auc_mean_and_interval_per_model_per_task(
    compared: tuple[Path, dict[str, Any], str],
) -> None:
    _, report, _ = compared
    assert set(report["models"]) == {"shared_bottom", "mmoe"}
    for model in report["models"].values():
        for output in OUTPUTS:
            task = model["tasks"][output]
            auc = task["auc"]
            assert len(auc["runs"]) == 2 and auc["interval"] == "t over seeds"
            assert auc["mean"] == pytest.approx(np.mean(auc["runs"]))
            assert 0.0 <= auc["low"] <= auc["mean"] <= auc["high"] <= 1.0
            for metric in ("logloss", "gauc", "calibration", "ece"):
                assert task[metric]["mean"] is not None, (output, metric)
            assert task["logloss"]["mean"] > 0
        # CVR is measured on clicked rows only, CTCVR on every row
        assert model["tasks"]["cvr"]["count"] < model["tasks"]["ctcvr"]["count"]
        assert model["tasks"]["cvr"]["count"] == model["tasks"]["ctr"]["positives"]
        assert model["params"] > 0 and len(model["train_seconds"]["runs"]) == 2
    assert set(report["oracle"]) == set(OUTPUTS)  # the generator's probabilities, as a ceiling
    sizes = {name: m["params"] for name, m in report["models"].items()}
    assert sizes["shared_bottom"] != sizes["mmoe"]


def test_pairwise_p_values_are_probabilities(compared: tuple[Path, dict[str, Any], str]) -> None:
    _, report, stdout = compared
    for output in OUTPUTS:
        (test,) = report["pairwise"][output]
        assert {test["a"], test["b"]} == {"shared_bottom", "mmoe"}
        assert 0.0 <= test["p_value"] <= 1.0
        assert len(test["p_values_by_seed"]) == 2
        assert all(0.0 <= p <= 1.0 for p in test["p_values_by_seed"])
        assert test["difference"] == pytest.approx(test["auc_a"] - test["auc_b"])
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert set(summary["best"]) == set(OUTPUTS)


def test_mmoe_gates_sum_to_one_per_task_overall_and_by_segment(
    compared: tuple[Path, dict[str, Any], str],
) -> None:
    _, report, _ = compared
    assert report["models"]["shared_bottom"]["gates"] is None
    runs = report["models"]["mmoe"]["gates"]["runs"]
    assert [run["seed"] for run in runs] == [0, 1]
    assert report["segments"]["feature"] == "activity"
    assert set(report["segments"]["segments"]) == {"low", "mid", "high"}
    for run in runs:
        assert set(run["gates"]) == {"ctr", "cvr"}
        for gate in run["gates"].values():
            assert len(gate["weights"]) == 3  # num_experts from hparams_by_model
            assert sum(gate["weights"].values()) == pytest.approx(1.0, abs=1e-5)
            assert set(gate["by_segment"]) == {"low", "mid", "high"}
            for weights in gate["by_segment"].values():
                assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
            assert 0.0 <= gate["entropy_normalized"] <= 1.0 + 1e-9


def test_plots_are_png_files_the_html_links(compared: tuple[Path, dict[str, Any], str]) -> None:
    out, report, _ = compared
    expected = [f"{kind}_{o}.png" for kind in ("roc", "calibration") for o in OUTPUTS]
    expected.append("gates_mmoe.png")
    assert not (out / "gates_shared_bottom.png").exists()
    page = (out / "report.html").read_text()
    for name in expected:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
        assert f"src='{name}'" in page
    assert report["plots"]["gates"] == {"mmoe": "gates_mmoe.png"}
    assert report["plots"]["roc"] == {o: f"roc_{o}.png" for o in OUTPUTS}


def test_variants_that_differ_in_strategy_are_compared_with_their_balancing_plotted(
    tiny_dir: Path, tmp_path: Path
) -> None:
    extra = ("--runs", "1", "--epochs", "2", "--batch-size", "2048", "--quiet")
    code, _ = _compare(tiny_dir, "mmoe,mmoe+uncertainty", tmp_path, *extra)
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["models"]) == {"mmoe", "mmoe+uncertainty"}
    assert report["models"]["mmoe+uncertainty"]["architecture"] == "mmoe+uncertainty"
    fixed = report["models"]["mmoe"]["balancing"][0]
    learned = report["models"]["mmoe+uncertainty"]["balancing"][0]
    assert fixed["ctr_weight"] == [1.0, 1.0] and len(fixed["cosine_ctr_cvr"]) == 2
    assert learned["cvr_weight"] != [1.0, 1.0]  # uncertainty moved its weights
    assert [p["a"] for p in report["pairwise"]["ctr"]] == ["mmoe"]  # the pair was tested
    data = (tmp_path / "balancing.png").read_bytes()
    assert (
        data.startswith(PNG_MAGIC)
        and "src='balancing.png'" in (tmp_path / "report.html").read_text()
    )


def test_one_run_falls_back_to_delong_interval(tiny_dir: Path, tmp_path: Path) -> None:
    extra = ("--runs", "1", "--epochs", "1", "--batch-size", "2048", "--quiet")
    code, _ = _compare(tiny_dir, "shared_bottom", tmp_path, *extra)
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    auc = report["models"]["shared_bottom"]["tasks"]["ctr"]["auc"]
    assert auc["interval"].startswith("DeLong")
    assert auc["low"] < auc["mean"] < auc["high"]
    assert report["pairwise"] == {o: [] for o in OUTPUTS}


@pytest.mark.parametrize(
    ("models", "extra", "message"),
    [
        ("shared_bottom,nope", [], "unknown architecture 'nope'"),
        ("mmoe,mmoe", [], "'mmoe' twice"),
        ("mmoe", ["--runs", "0"], "--runs must be >= 1, got 0"),
        ("mmoe", ["--epochs", "0"], "--epochs must be >= 1"),
        ("mmoe,mmoe+pcgrd", [], "unknown strategy 'pcgrd'"),
        ("mmoe+", [], "'mmoe+' names no strategy after '+'"),
    ],
)
def test_bad_input_is_one_line(
    tiny_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    models: str,
    extra: list[str],
    message: str,
) -> None:
    code, _ = _compare(tiny_dir, models, tmp_path / "r", *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("mtrank compare: error:") and "\n" not in err
    assert message in err


def test_missing_data_dir_and_bad_config_key_are_one_line(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _compare(tmp_path / "absent", "mmoe", tmp_path / "r")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "absent is not a directory" in err and "\n" not in err
    config = tmp_path / "bad.yaml"
    config.write_text("hparams: {num_expertz: 3}\n")
    code, _ = _compare(tiny_dir, "shared_bottom,mmoe", tmp_path / "r", "--config", str(config))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "'num_expertz'" in err and "\n" not in err


# ---- the statistics, by hand -------------------------------------------------------------------


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_mean_interval_is_the_t_interval() -> None:
    cell = mean_interval([0.70, 0.72, 0.74])
    half = 4.3027 * 0.02 / math.sqrt(3)
    assert cell["mean"] == pytest.approx(0.72)
    assert (cell["low"], cell["high"]) == pytest.approx((0.72 - half, 0.72 + half), abs=1e-4)
    assert mean_interval([0.7])["low"] is None


def test_collapse_warnings_flag_unused_experts_and_peaked_gates() -> None:
    def gate(weights: dict[str, float]) -> dict[str, Any]:
        return {"weights": weights}

    healthy = {
        "ctr": gate({"e0": 0.5, "e1": 0.3, "e2": 0.2}),
        "cvr": gate({"e0": 0.3, "e1": 0.4, "e2": 0.3}),
    }
    assert collapse_warnings(healthy, "m") == []
    # e2 gets under 1/(4*3) from both tasks; cvr puts 0.95 on e1
    sick = {
        "ctr": gate({"e0": 0.6, "e1": 0.35, "e2": 0.05}),
        "cvr": gate({"e0": 0.03, "e1": 0.95, "e2": 0.02}),
    }
    warnings = collapse_warnings(sick, "m")
    assert any("expert e2" in w and "nearly unused" in w for w in warnings)
    assert any("cvr gate puts 0.95 on expert e1" in w for w in warnings)
    assert not any("expert e0 " in w and "unused" in w for w in warnings)


def test_cgc_gates_map_to_their_own_and_the_shared_experts() -> None:
    class HP:
        specific_experts = 1
        shared_experts = 2

    experts = ExpertMap.of(HP(), ["ctr", "cvr"], 3)
    assert experts.names == ["ctr:0", "cvr:0", "shared:0", "shared:1"]
    assert experts.columns("cvr/level0", 3) == ["cvr:0", "shared:0", "shared:1"]
    assert ExpertMap.of(object(), ["ctr", "cvr"], 4).columns("ctr", 4) == ["e0", "e1", "e2", "e3"]
