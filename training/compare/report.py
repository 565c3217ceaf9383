"""The sections of the `mtrank compare` report: per-model metrics, pairwise tests, the oracle, notes.

    per variant and output: AUC mean with a t-interval over seeds (R = 1: DeLong's interval on the
        test set), logloss, GAUC, calibration, ECE (means and intervals over seeds), and the ROC
        and reliability curves of the seed-averaged scores
    per output and pair of variants: DeLong's test on the SEED-AVERAGED test scores

Why seed-averaged scores for the pairwise test: one seed's scores carry that seed's training noise,
so two runs of the SAME architecture often differ "significantly" on a large test set. Averaging the
R runs' probabilities per row removes most of that noise, and both variants get the same treatment.
The per-seed p-values (seed r of A against seed r of B) are in the report too. DeLong only measures
test-set sampling noise; the t-interval over seeds measures training noise: read both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.errors import MtrankError
from ranker.schema import Schema
from training import metrics
from training.compare.curves import reliability, roc_curve
from training.compare.gates import COLLAPSE_SHARE, MAX_PEAK_WEIGHT
from training.compare.intervals import mean_interval

ORACLE_COLUMNS = {"ctr": "p_click", "cvr": "p_conversion"}  # `mtrank synth`'s true probabilities


@dataclass
class VariantRuns:
    """What R runs of one variant left behind."""

    name: str
    test: list[dict[str, dict[str, float]]] = field(default_factory=list)
    scores: list[dict[str, np.ndarray]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    params: int = 0
    gates: list[dict[str, Any]] = field(default_factory=list)
    # per run: per epoch, each objective's balancing coefficient and each pair's gradient cosine
    balancing: list[dict[str, list[float]]] = field(default_factory=list)


def oracle_aucs(
    test_path: Path,
    schema: Schema,
    labels: Mapping[str, np.ndarray],
    rows: Mapping[str, np.ndarray],
) -> dict[str, float] | None:
    """AUC of the generator's true probabilities (synthetic data only): the ceiling per output.

    `p_click` scores ctr, `p_conversion` (P(conversion | click)) scores cvr on clicked rows, and
    their product scores ctcvr. None when the test split has no such columns.
    """
    from training.data import read_columns

    try:
        truth = read_columns(test_path, list(ORACLE_COLUMNS.values()))
    except MtrankError:
        return None
    p_click = np.asarray(truth[ORACLE_COLUMNS["ctr"]], np.float64)
    p_conversion = np.asarray(truth[ORACLE_COLUMNS["cvr"]], np.float64)
    scores = {"ctr": p_click, "cvr": p_conversion, "ctcvr": p_click * p_conversion}
    return {
        output: metrics.auc(labels[output][mask], scores[output][mask])
        for output, mask in rows.items()
        if output in scores
    }


def pairwise_tests(
    names: Sequence[str],
    labels: Mapping[str, np.ndarray],
    rows: Mapping[str, np.ndarray],
    mean_scores: Mapping[str, Mapping[str, np.ndarray]],
    seed_scores: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    level: float,
) -> dict[str, list[dict[str, Any]]]:
    """Per output, DeLong's test for every pair of variants on the seed-averaged test scores."""
    alpha = 1.0 - level
    result: dict[str, list[dict[str, Any]]] = {}
    for output, mask in rows.items():
        y = labels[output][mask]
        tests = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                auc_a, auc_b, z, p = metrics.delong_test(
                    y, mean_scores[a][output][mask], mean_scores[b][output][mask]
                )
                by_seed = [
                    metrics.delong_test(y, sa[output][mask], sb[output][mask])[3]
                    for sa, sb in zip(seed_scores[a], seed_scores[b], strict=False)
                ]
                significant = math.isfinite(p) and p < alpha
                tests.append(
                    {
                        "a": a,
                        "b": b,
                        "auc_a": auc_a,
                        "auc_b": auc_b,
                        "difference": auc_a - auc_b,
                        "z": z,
                        "p_value": p,
                        "p_values_by_seed": by_seed,
                        "significant": significant,
                        "better": (a if auc_a > auc_b else b) if significant else None,
                    }
                )
        result[output] = tests
    return result


def model_section(
    name: str,
    variant: VariantRuns,
    labels: Mapping[str, np.ndarray],
    rows: Mapping[str, np.ndarray],
    mean_scores: Mapping[str, np.ndarray],
    level: float,
) -> dict[str, Any]:
    """One variant's section: per output, metrics over seeds (t-intervals kept inside each metric's
    range; one run: DeLong's AUC interval) and curves of its seed-averaged scores; its parameter
    count, training time, epochs and gates."""
    tasks: dict[str, Any] = {}
    for output, mask in rows.items():
        y = labels[output][mask]
        per_metric = {
            metric: mean_interval([run[output][metric] for run in variant.test], level)
            for metric in ("auc", "gauc", "logloss", "calibration", "ece")
        }
        for metric, cell in per_metric.items():  # keep t-intervals inside the metric's range
            top = 1.0 if metric in ("auc", "gauc", "ece") else math.inf
            if cell["low"] is not None:
                cell.update(low=max(cell["low"], 0.0), high=min(cell["high"], top))
        auc = per_metric["auc"]
        auc["interval"] = "t over seeds"
        if len(variant.test) == 1:
            _, low, high = metrics.auc_confidence_interval(
                y, variant.scores[0][output][mask], level
            )
            auc.update(low=low, high=high, interval="DeLong on the test set (one run)")
        averaged = mean_scores[output][mask]
        tasks[output] = {
            **per_metric,
            "count": int(mask.sum()),
            "positives": int(y.sum()),
            "auc_of_mean_scores": metrics.auc(y, averaged),
            "roc": roc_curve(y, averaged),
            "reliability": reliability(y, averaged),
        }
    return {
        "architecture": name,
        "params": variant.params,
        "train_seconds": mean_interval(variant.seconds, level),
        "epochs_run": variant.epochs,
        "balancing": variant.balancing,
        "tasks": tasks,
        "gates": (
            {"shown_seed": variant.gates[0]["seed"], "runs": variant.gates}
            if variant.gates
            else None
        ),
    }


def notes(runs: int, level: float) -> list[str]:
    """How to read the report: which intervals, which scores, which rows."""
    pct = f"{round(level * 100)}%"
    interval = (
        f"{pct} t-intervals of the mean over {runs} seeds (training noise)"
        if runs > 1
        else f"one run: AUC intervals are {pct} DeLong intervals on the test set"
    )
    return [
        f"AUC, GAUC, logloss, calibration and ECE are means over seeds with {interval}.",
        "Pairwise p-values: DeLong's test on the seed-averaged test scores (test-set noise); "
        "p_values_by_seed compares seed r of one variant with seed r of the other.",
        "ROC and reliability curves use the seed-averaged scores.",
        "CVR is measured on clicked rows only; CTCVR on all rows against click * conversion.",
        "Gate weights: experts are interchangeable between seeds, so gates are reported per seed "
        "and the plots show the first seed.",
        f"Collapse warnings: an expert under {COLLAPSE_SHARE:g}/E of every gate reaching it, or a "
        f"gate putting more than {MAX_PEAK_WEIGHT:g} on one expert.",
    ]
