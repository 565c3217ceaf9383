"""`mtrank ab-report` and its statistics (training/ab.py) on small hand-made logs.

The intervals and tests are checked against values computed by hand; the join against logs whose
counts are known; bad input against the one-line errors that name FILE:LINE.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from training.ab import two_proportion_test, wilson_interval
from training.cli import main


def test_wilson_interval_matches_hand_computed_values() -> None:
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(3.8415 / 13.8415, abs=1e-4)  # z^2 / (n + z^2)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(30, 1000)
    assert low < 0.03 < high and high - low < 0.03  # asymmetric around small rates
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    # exactly 0 and 1 at the ends, so `low <= value <= high` holds for a rate of 0 or 1
    assert wilson_interval(0, 37)[0] == 0.0 and wilson_interval(37, 37)[1] == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_two_proportion_z_test_matches_hand_computed_values() -> None:
    # 200/1000 vs 250/1000: pooled p 0.225, se sqrt(.225 * .775 * .002) = 0.018675, z = 2.677
    result = two_proportion_test(200, 1000, 250, 1000)
    assert result.diff == pytest.approx(0.05)
    assert result.z == pytest.approx(2.6774, abs=1e-3)
    assert result.p_value == pytest.approx(0.00742, abs=2e-4)
    assert result.relative == pytest.approx(0.25)
    assert result.relative_low < 0.25 < result.relative_high
    assert result.diff_low > 0  # significant: the interval of the difference excludes 0
    same = two_proportion_test(30, 1000, 30, 1000)
    assert (same.z, same.p_value) == (0.0, 1.0)
    assert math.isnan(two_proportion_test(0, 100, 0, 100).relative)


# ---- the command --------------------------------------------------------------------------


def write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def exposure(request_id: str, variant: str | None, scores: list[float]) -> dict[str, Any]:
    items = [f"i{k}" for k in range(len(scores))]
    return {
        "request_id": request_id,
        "time": "2026-11-21T10:00:00.000Z",
        "user_id": f"u{request_id}",
        "experiment": None if variant is None else "gates",
        "variant": variant,
        "model": {"control": "mmoe", "treatment": "ple"}.get(variant or "", "mmoe"),
        "version": "1",
        "item_ids": items,
        "scores": {"ctr": scores, "cvr": [0.1] * len(scores), "ctcvr": [s * 0.1 for s in scores]},
        "shadow": {"cgc": {"version": "2", "scores": {"ctr": scores[::-1]}}},
        "degraded": False,
    }


def feedback(request_id: str, clicks: list[int], conversions: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "request_id": request_id, "item_id": f"i{k}", "position": k + 1, "click": c,
            "conversion": v, "p_click": 0.1, "p_conversion": 0.2 if request_id[0] == "t" else 0.1,
        }
        for k, (c, v) in enumerate(zip(clicks, conversions, strict=True))
    ]  # fmt: skip


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, Path]:
    """20 control requests (1 click, 0 conversions in 4 shown each) and 20 treatment requests
    (2 clicks, 1 conversion each); one exposure outside the experiment; one feedback row of an
    unknown request."""
    exposures, rows = [], []
    for n in range(20):
        exposures.append(exposure(f"c{n}", "control", [0.9, 0.1, 0.2, 0.3, 0.05]))
        rows += feedback(f"c{n}", [1, 0, 0, 0], [0, 0, 0, 0])
        exposures.append(exposure(f"t{n}", "treatment", [0.9, 0.8, 0.1, 0.2, 0.05]))
        rows += feedback(f"t{n}", [1, 1, 0, 0], [1, 0, 0, 0])
    exposures.append(exposure("m0", None, [0.5, 0.5]))
    rows += feedback("ghost", [0], [0])
    return (
        write_lines(tmp_path / "exposures.jsonl", exposures),
        write_lines(tmp_path / "feedback.jsonl", rows),
    )


def test_report_has_per_variant_rates_intervals_lifts_and_task_metrics(
    logs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exposures, feedback_file = logs
    out = tmp_path / "report"
    code = main(
        ["ab-report", "--exposures", str(exposures), "--feedback", str(feedback_file),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["experiments"]["gates"]["best"] == "treatment"
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["impressions_joined"] == 160
    assert report["inputs"]["exposures_outside_experiments"] == 1
    assert report["inputs"]["unmatched_feedback"] == 1
    gates = report["experiments"]["gates"]
    assert gates["control"] == "control"
    control, treatment = gates["variants"]["control"], gates["variants"]["treatment"]
    assert (control["requests"], control["impressions"], control["clicks"]) == (20, 80, 20)
    assert treatment["ctr"]["value"] == pytest.approx(0.5)
    assert treatment["cvr"]["value"] == pytest.approx(0.5)
    assert treatment["ctcvr"]["value"] == pytest.approx(0.25)
    assert (treatment["ctcvr"]["low"], treatment["ctcvr"]["high"]) == pytest.approx(
        wilson_interval(20, 80)
    )
    assert treatment["true"]["ctcvr"] == pytest.approx(0.02)
    assert control["true"]["ctcvr"] == pytest.approx(0.01)
    assert gates["true_ranking"] == {"ranking": ["treatment", "control"], "agrees": True}
    lift = treatment["lift"]["ctr"]
    assert lift["p_value"] == pytest.approx(two_proportion_test(20, 80, 40, 80).p_value)
    assert "lift" not in control
    # the served ctr ranks the clicked first item above the rest: AUC 1 in control
    assert control["tasks"]["ctr"]["auc"] == pytest.approx(1.0)
    assert control["tasks"]["cvr"]["rows"] == 20  # cvr on clicked rows only
    assert control["shadow"]["cgc"]["ctr"]["auc"] is not None
    html = (out / "report.html").read_text()
    assert "treatment" in html and "<svg" in html and "Best by CTCVR" in html
    assert "<script" not in html and "src=" not in html and "href=" not in html  # self-contained


def test_control_can_be_named(logs: tuple[Path, Path], tmp_path: Path) -> None:
    exposures, feedback_file = logs
    out = tmp_path / "r"
    args = ["ab-report", "--exposures", str(exposures), "--feedback", str(feedback_file)]
    assert main([*args, "--out", str(out), "--control", "treatment"]) == 0
    gates = json.loads((out / "report.json").read_text())["experiments"]["gates"]
    assert gates["control"] == "treatment" and "lift" in gates["variants"]["control"]
    assert main([*args, "--out", str(out), "--control", "nope"]) == 2


@pytest.mark.parametrize(
    ("which", "text", "message"),
    [
        ("feedback", None, "--feedback {path}: no such file"),
        ("exposures", None, "--exposures {path}: no such file"),
        ("feedback", '{"request_id": "c0"}\nnot json\n', "{path}:1: missing key 'item_id'"),
        ("feedback", '\n{"request_id": "c0", "item_id": "i0", "click": 0, "conversion": 0}\n{',
         "{path}:3: not a JSON line"),
        ("feedback", '{"request_id": "c0", "item_id": "i0", "click": 0, "conversion": 1}\n',
         "{path}:1: a conversion without a click"),
        ("exposures", '{"request_id": "c0", "item_ids": ["i0"], "scores": {"ctr": [1, 2]}}\n',
         "{path}:1: scores: 'ctr' is not a list of 1 scores"),
        ("exposures", "[1, 2]\n", "{path}:1: expected a JSON object"),
    ],
)  # fmt: skip
def test_bad_input_is_a_one_line_error_naming_file_and_line(
    which: str,
    text: str | None,
    message: str,
    logs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = {"exposures": logs[0], "feedback": logs[1]}
    bad = tmp_path / f"bad-{which}.jsonl"
    if text is not None:
        bad.write_text(text)
    files[which] = bad
    code = main(
        ["ab-report", "--exposures", str(files["exposures"]), "--feedback",
         str(files["feedback"]), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtrank ab-report: error: ")
    assert message.format(path=bad) in lines[0]
