"""Online A/B analysis: join the service's exposure log with a feedback log, per experiment variant.

Statistics (pure Python):

- `wilson_interval(k, n)`: the Wilson score interval of a proportion (Wilson, "Probable
  Inference, the Law of Succession, and Statistical Inference", JASA 1927); honest near 0,
  where click and conversion rates live.
- `two_proportion_test(k_a, n_a, k_b, n_b)`: B against A: the difference with its (unpooled)
  normal interval, the relative lift with a delta-method interval on log(p_b / p_a), and the
  two-sided p-value of the pooled two-proportion z-test.

Both treat impressions as independent. Impressions of one request (and one user) are
correlated, so with many impressions per user the intervals are somewhat too narrow; the
report says so.

The join (`join_logs`): feedback lines (`request_id`, `item_id`, `position`, `click`,
`conversion`, optional true `p_click`, `p_conversion`) are read first and grouped by request;
then the exposure log is streamed, and every shown item picks up the variant and the served
scores of its request (and its shadow scores). Exposures outside any experiment (the request
named its model) are counted and left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from ranker.errors import MtrankError

LEVEL = 0.95
# served outputs whose label the feedback log has: (label, condition), where the condition is the
# label an output is conditioned on (scored on rows where it is 1: `metrics.scored_rows`) or None
TASK_LABELS: dict[str, tuple[str, str | None]] = {
    "ctr": ("click", None),
    "cvr": ("conversion", "click"),
    "ctcvr": ("conversion", None),
}


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of successes / trials; (nan, nan) for zero trials."""
    if trials <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in 0..trials, got {successes} of {trials}")
    z = _z(level)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # at 0 (or all) successes the bound is exactly 0 (or 1); rounding would leave ~1e-19 there
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Comparison:
    """B against A for one proportion."""

    diff: float  # p_b - p_a
    diff_low: float
    diff_high: float
    relative: float  # p_b / p_a - 1
    relative_low: float
    relative_high: float
    z: float
    p_value: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: _finite(v) for k, v in self.__dict__.items()}


def two_proportion_test(k_a: int, n_a: int, k_b: int, n_b: int, level: float = LEVEL) -> Comparison:
    """Difference, relative lift (with intervals) and the pooled z-test's two-sided p-value."""
    nan = math.nan
    if n_a <= 0 or n_b <= 0:
        return Comparison(nan, nan, nan, nan, nan, nan, nan, nan)
    z_level = _z(level)
    p_a, p_b = k_a / n_a, k_b / n_b
    diff = p_b - p_a
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    pooled = (k_a + k_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se_pooled > 0:
        z = diff / se_pooled
        p_value = 2.0 * (1.0 - NormalDist().cdf(abs(z)))
    else:  # both rates 0 or both 1: no evidence of a difference
        z, p_value = 0.0, 1.0
    if k_a > 0 and k_b > 0:
        relative = p_b / p_a - 1.0
        se_log = math.sqrt(max((1 - p_a) / k_a + (1 - p_b) / k_b, 0.0))
        log_ratio = math.log(p_b / p_a)
        rel_low = math.exp(log_ratio - z_level * se_log) - 1.0
        rel_high = math.exp(log_ratio + z_level * se_log) - 1.0
    else:
        relative = rel_low = rel_high = nan
    return Comparison(
        diff, diff - z_level * se, diff + z_level * se, relative, rel_low, rel_high, z, p_value
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ---- reading the logs ---------------------------------------------------------------------------


def read_json_lines(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; MtrankError naming FILE:LINE if bad."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise MtrankError(f"{what} {path}: no such file") from None
    except OSError as err:
        raise MtrankError(f"{what} {path}: cannot read it ({err.strerror})") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as err:
                raise MtrankError(f"{path}:{number}: not a JSON line ({err.args[0]})") from None
            if not isinstance(value, dict):
                raise MtrankError(f"{path}:{number}: expected a JSON object")
            yield number, value


def _require(value: dict[str, Any], key: str, kinds: type | tuple[type, ...], where: str) -> Any:
    if key not in value:
        raise MtrankError(f"{where}: missing key {key!r}")
    found = value[key]
    if not isinstance(found, kinds) or (isinstance(found, bool) and bool not in _tuple(kinds)):
        raise MtrankError(f"{where}: {key!r} has the wrong type ({type(found).__name__})")
    return found


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def parse_time(value: Any, where: str) -> float:
    """Unix seconds of a log time: an ISO-8601 string ("2026-12-05T10:00:00.123Z"; UTC when it
    names no zone) or a number of unix seconds; a MtrankError naming `where` otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    raise MtrankError(f"{where}: expected an ISO-8601 UTC time or unix seconds, got {value!r}")


def iso_time(seconds: float) -> str:
    """Unix `seconds` as the logs write a time: ISO-8601 UTC with milliseconds and a Z."""
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class Shown:
    """One shown item's feedback; `time` and `conversion_time` in unix seconds, NaN if unknown."""

    item_id: str
    position: int
    click: int
    conversion: int
    p_click: float
    p_conversion: float
    time: float = math.nan
    conversion_time: float = math.nan


def read_feedback(path: Path) -> tuple[dict[str, list[Shown]], int]:
    """Feedback rows by request id, and the number of lines read.

    The optional `time` and `conversion_time` (ISO-8601 UTC or unix seconds; `conversion_time`
    defaults to `time`) are kept on each row; a time that does not parse is an error naming
    FILE:LINE.
    """
    by_request: dict[str, list[Shown]] = {}
    lines = 0
    for number, row in read_json_lines(path, "--feedback"):
        where = f"{path}:{number}"
        request_id = _require(row, "request_id", str, where)
        item_id = _require(row, "item_id", str, where)
        click = _require(row, "click", (int, bool), where)
        conversion = _require(row, "conversion", (int, bool), where)
        if click not in (0, 1) or conversion not in (0, 1):
            raise MtrankError(f"{where}: click and conversion must be 0 or 1")
        if conversion and not click:
            raise MtrankError(f"{where}: a conversion without a click")
        position = row.get("position", 0)
        p_click, p_conversion = row.get("p_click", math.nan), row.get("p_conversion", math.nan)
        for key, value in (
            ("position", position),
            ("p_click", p_click),
            ("p_conversion", p_conversion),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise MtrankError(f"{where}: {key!r} must be a number")
        shown_at = parse_time(row["time"], f"{where}: 'time'") if "time" in row else math.nan
        converted_at = (
            parse_time(row["conversion_time"], f"{where}: 'conversion_time'")
            if "conversion_time" in row
            else shown_at
        )
        by_request.setdefault(request_id, []).append(
            Shown(
                item_id,
                int(position),
                int(click),
                int(conversion),
                float(p_click),
                float(p_conversion),
                shown_at,
                converted_at,
            )
        )
        lines += 1
    return by_request, lines


# ---- the join -----------------------------------------------------------------------------------


@dataclass
class Arm:
    """Everything shown by one experiment variant, as columns."""

    models: dict[str, str] = field(default_factory=dict)  # model -> version(s) seen
    policies: dict[str, int] = field(default_factory=dict)  # ranking policy -> requests
    requests: int = 0
    users: set[str] = field(default_factory=set)
    click: list[int] = field(default_factory=list)
    conversion: list[int] = field(default_factory=list)
    p_click: list[float] = field(default_factory=list)
    p_conversion: list[float] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    shadow: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass
class Joined:
    arms: dict[tuple[str, str], Arm]
    exposure_lines: int = 0
    feedback_lines: int = 0
    impressions: int = 0
    outside_experiments: int = 0
    without_feedback: int = 0
    unmatched_feedback: int = 0  # feedback rows whose request or item is not in the exposures
    duplicate_exposures: int = 0


def join_logs(exposures: Path | Sequence[Path], feedback: Path) -> Joined:
    """Every feedback row with the variant, ranking policy and served scores of its request.

    `exposures` may be several files (a rotated log: `FILE.*` and FILE), read in turn; schema
    lines (`"kind": "schema"`, written with `mtrank serve --log-features`) are skipped. An
    exposure's columns hold the items it returned, so feedback for any other item is unmatched.
    """
    shown_by_request, feedback_lines = read_feedback(feedback)
    joined = Joined(arms={}, feedback_lines=feedback_lines)
    matched: set[str] = set()
    files = [exposures] if isinstance(exposures, Path) else list(exposures)
    lines = (
        (f"{path}:{number}", line)
        for path in files
        for number, line in read_json_lines(path, "--exposures")
        if line.get("kind") != "schema"
    )
    for where, line in lines:
        joined.exposure_lines += 1
        request_id = _require(line, "request_id", str, where)
        item_ids = _require(line, "item_ids", list, where)
        scores = _require(line, "scores", dict, where)
        experiment = line.get("experiment")
        variant = line.get("variant")
        _check_columns(scores, len(item_ids), f"{where}: scores")
        if experiment is None or variant is None:
            joined.outside_experiments += 1
            continue
        shown = shown_by_request.get(request_id)
        if shown is None:
            joined.without_feedback += 1
            continue
        if request_id in matched:
            joined.duplicate_exposures += 1
            continue
        matched.add(request_id)
        arm = joined.arms.setdefault((str(experiment), str(variant)), Arm())
        model = str(_require(line, "model", str, where))
        versions = set(filter(None, arm.models.get(model, "").split(",")))
        arm.models[model] = ",".join(sorted(versions | {str(line.get("version", ""))}))
        policy = line.get("policy")
        if policy is not None:
            arm.policies[str(policy)] = arm.policies.get(str(policy), 0) + 1
        arm.requests += 1
        arm.users.add(str(line.get("user_id")))
        index = {item: k for k, item in reversed(list(enumerate(item_ids)))}
        shadows = line.get("shadow") or {}
        for row in shown:
            k = index.get(row.item_id)
            if k is None:
                joined.unmatched_feedback += 1
                continue
            arm.click.append(row.click)
            arm.conversion.append(row.conversion)
            arm.p_click.append(row.p_click)
            arm.p_conversion.append(row.p_conversion)
            arm.position.append(row.position)
            for task, column in scores.items():
                arm.scores.setdefault(task, []).append(float(column[k]))
            for name, entry in shadows.items():
                columns = entry.get("scores") if isinstance(entry, dict) else None
                if not isinstance(columns, dict):
                    continue
                _check_columns(columns, len(item_ids), f"{where}: shadow {name!r}")
                target = arm.shadow.setdefault(name, {})
                for task, column in columns.items():
                    target.setdefault(task, []).append(float(column[k]))
            joined.impressions += 1
    joined.unmatched_feedback += sum(
        len(rows) for request_id, rows in shown_by_request.items() if request_id not in matched
    )
    return joined


def _check_columns(scores: dict[str, Any], n: int, where: str) -> None:
    for task, column in scores.items():
        if not isinstance(column, list) or len(column) != n:
            raise MtrankError(f"{where}: {task!r} is not a list of {n} scores (one per item)")


# ---- per-variant statistics ---------------------------------------------------------------------


def rate(successes: int, trials: int, level: float = LEVEL) -> dict[str, float | int | None]:
    low, high = wilson_interval(successes, trials, level)
    value = successes / trials if trials else math.nan
    return {
        "value": _finite(value),
        "low": _finite(low),
        "high": _finite(high),
        "successes": successes,
        "trials": trials,
    }


def task_metrics(arm: Arm, scores: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """AUC (with DeLong interval), calibration (mean score / rate) and ECE per served task."""
    from training.metrics import (
        auc_confidence_interval,
        calibration,
        expected_calibration_error,
        scored_rows,
    )

    columns = {"click": np.asarray(arm.click), "conversion": np.asarray(arm.conversion)}
    out: dict[str, dict[str, Any]] = {}
    for task, column in scores.items():
        if task not in TASK_LABELS:
            continue
        label_name, condition = TASK_LABELS[task]
        labels = columns[label_name]
        values = np.asarray(column, np.float64)
        keep = scored_rows(len(labels), None if condition is None else columns[condition])
        y, s = labels[keep], values[keep]
        value, low, high = auc_confidence_interval(y, s) if len(y) else (math.nan,) * 3
        out[task] = {
            "label": label_name,
            "rows": int(keep.sum()),
            "positives": int(y.sum()),
            "auc": _finite(value),
            "auc_low": _finite(low),
            "auc_high": _finite(high),
            "calibration": _finite(calibration(y, s)),
            "ece": _finite(expected_calibration_error(y, s)),
            "mean_score": _finite(float(s.mean()) if len(s) else math.nan),
        }
    return out


def arm_summary(arm: Arm, level: float = LEVEL) -> dict[str, Any]:
    impressions = len(arm.click)
    clicks, conversions = int(sum(arm.click)), int(sum(arm.conversion))
    p_click = np.asarray(arm.p_click, np.float64)
    p_ctcvr = p_click * np.asarray(arm.p_conversion, np.float64)
    true: dict[str, float | None] = {"ctr": None, "cvr": None, "ctcvr": None}
    if impressions and np.isfinite(p_ctcvr).all():
        true = {
            "ctr": _finite(float(p_click.mean())),
            "cvr": _finite(float(p_ctcvr.sum() / p_click.sum())),
            "ctcvr": _finite(float(p_ctcvr.mean())),
        }
    policies = dict(sorted(arm.policies.items()))
    return {
        "models": dict(sorted(arm.models.items())),
        # the ranking policy of every request (None when they differ or had none), and counts
        "policy": next(iter(policies)) if list(policies.values()) == [arm.requests] else None,
        "policies": policies,
        "requests": arm.requests,
        "users": len(arm.users),
        "impressions": impressions,
        "clicks": clicks,
        "conversions": conversions,
        "ctr": rate(clicks, impressions, level),
        "cvr": rate(conversions, clicks, level),
        "ctcvr": rate(conversions, impressions, level),
        "true": true,
        "tasks": task_metrics(arm, arm.scores),
        "shadow": {
            name: task_metrics(arm, columns) for name, columns in sorted(arm.shadow.items())
        },
    }


METRICS = {
    "ctr": ("clicks", "impressions"),
    "cvr": ("conversions", "clicks"),
    "ctcvr": ("conversions", "impressions"),
}


def experiment_report(
    arms: dict[str, Arm], control: str | None = None, level: float = LEVEL
) -> dict[str, Any]:
    """Per-variant rows, lifts against the control and the best variant by CTCVR."""
    names = sorted(arms)
    if control is not None and control not in arms:
        raise MtrankError(f"--control {control!r}: no such variant (variants: {names})")
    if control is not None:
        chosen, rule = control, "--control"
    elif "control" in arms:
        chosen, rule = "control", "the variant named 'control'"
    else:
        chosen, rule = names[0], "the first variant by name (pass --control to choose)"
    variants = {name: arm_summary(arms[name], level) for name in names}
    base = variants[chosen]
    for name, row in variants.items():
        if name == chosen:
            continue
        row["lift"] = {
            metric: two_proportion_test(base[k], base[n], row[k], row[n], level).to_dict()
            for metric, (k, n) in METRICS.items()
        }
    ranked = sorted(names, key=lambda n: variants[n]["ctcvr"]["value"] or 0.0, reverse=True)
    best = ranked[0]
    best_row = variants[best]
    lift = best_row.get("lift", {}).get("ctcvr")
    trues = [variants[n]["true"]["ctcvr"] for n in names]
    true_order = None
    if all(t is not None for t in trues):
        true_ranked = sorted(names, key=lambda n: variants[n]["true"]["ctcvr"], reverse=True)
        true_order = {"ranking": true_ranked, "agrees": true_ranked == ranked}
    return {
        "control": chosen,
        "control_rule": rule,
        "variants": variants,
        "best": {
            "metric": "ctcvr",
            "variant": best,
            "ctcvr": best_row["ctcvr"],
            "is_control": best == chosen,
            "lift_vs_control": lift,
            "significant": bool(
                lift and lift["p_value"] is not None and lift["p_value"] < 1 - level
            ),
        },
        "observed_ranking": ranked,
        "true_ranking": true_order,
    }


def build_report(
    exposures: Path | Sequence[Path],
    feedback: Path,
    control: str | None = None,
    level: float = LEVEL,
) -> dict[str, Any]:
    """The whole report.json: inputs, counts and one section per experiment."""
    files = [exposures] if isinstance(exposures, Path) else list(exposures)
    joined = join_logs(files, feedback)
    if joined.impressions == 0:
        raise MtrankError(
            f"no feedback row of {feedback} matches an experiment exposure in "
            f"{', '.join(map(str, files))} "
            f"({joined.exposure_lines} exposures, {joined.outside_experiments} outside any "
            f"experiment, {joined.feedback_lines} feedback rows)"
        )
    by_experiment: dict[str, dict[str, Arm]] = {}
    for (experiment, variant), arm in joined.arms.items():
        by_experiment.setdefault(experiment, {})[variant] = arm
    if control is not None and not any(control in arms for arms in by_experiment.values()):
        known = sorted({v for arms in by_experiment.values() for v in arms})
        raise MtrankError(f"--control {control!r}: no experiment has that variant ({known})")
    experiments = {
        name: experiment_report(arms, control if control in arms else None, level)
        for name, arms in sorted(by_experiment.items())
    }
    return {
        "level": level,
        "inputs": {
            "exposures": [str(path) for path in files],
            "feedback": str(feedback),
            "exposure_lines": joined.exposure_lines,
            "feedback_lines": joined.feedback_lines,
            "impressions_joined": joined.impressions,
            "exposures_outside_experiments": joined.outside_experiments,
            "exposures_without_feedback": joined.without_feedback,
            "duplicate_exposures": joined.duplicate_exposures,
            "unmatched_feedback": joined.unmatched_feedback,
        },
        "notes": [
            "Intervals are Wilson score intervals; lifts use the pooled two-proportion z-test "
            "and treat impressions as independent (impressions of one user are correlated, so "
            "the intervals are somewhat optimistic).",
            "Task metrics are measured on the shown items only: ctr and ctcvr on every "
            "impression, cvr on clicked impressions. Scores were served for position 1, so "
            "ctr calibration over positions 1..K is expected to be above 1.",
        ],
        "experiments": experiments,
    }
