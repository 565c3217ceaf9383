"""Offline A/B comparison of architectures (`mtrank compare`): R seeds each, same split, honest intervals.

    config.py       CompareConfig: the shared training config and per-model hyperparameter overrides
    comparison.py   `compare`: trains every variant R times, builds the report, writes the plots
    intervals.py    the Student-t quantile and the t-interval of a mean over seeds
    curves.py       ROC and reliability curves
    report.py       the report's sections: per-model metrics, pairwise DeLong tests, oracle, notes
    segments.py     user activity terciles of the test rows
    gates.py        gate weights per expert, gate entropy, expert-collapse warnings
    plots.py        the PNGs (matplotlib, Agg, no display)

Which rows an output is scored on (cvr on clicked rows, ctcvr on all) is `training.metrics`'s rule.
The CLI (`training/commands/compare.py`) parses flags and writes report.json and report.html.
"""

from training.compare.comparison import compare
from training.compare.config import CompareConfig
from training.compare.curves import reliability, roc_curve
from training.compare.gates import (
    ExpertMap,
    collapse_warnings,
    gate_label,
    gate_weights,
    summarize_gates,
)
from training.compare.intervals import mean_interval, t_quantile
from training.compare.plots import gate_matrix, plot_calibration, plot_gates, plot_roc
from training.compare.report import VariantRuns, oracle_aucs, pairwise_tests
from training.compare.segments import segment_rows

__all__ = [
    "CompareConfig",
    "ExpertMap",
    "VariantRuns",
    "collapse_warnings",
    "compare",
    "gate_label",
    "gate_matrix",
    "gate_weights",
    "mean_interval",
    "oracle_aucs",
    "pairwise_tests",
    "plot_calibration",
    "plot_gates",
    "plot_roc",
    "reliability",
    "roc_curve",
    "segment_rows",
    "summarize_gates",
    "t_quantile",
]
