"""`compare`: train every variant R times on the same split, then build the report and its plots.

for each variant, for seed in seeds:  train(DIR, variant) --> test scores, gate weights
per variant and output: metrics over seeds, curves of the seed-averaged scores (`report.py`)
per output and pair of variants: DeLong's test on the seed-averaged test scores (`report.py`)
per gated variant: gate weights per expert per task, overall and by user activity tercile,
    gate entropy, expert-collapse warnings (`gates.py`, `segments.py`)
plots: ROC, reliability, gate heatmaps (`plots.py`)
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ranker.errors import ConfigError, MtrankError
from ranker.schema import Schema
from training import metrics
from training.compare.config import CompareConfig, split_variant
from training.compare.gates import ExpertMap, gate_weights, summarize_gates
from training.compare.plots import plot_balancing, plot_calibration, plot_gates, plot_roc
from training.compare.report import VariantRuns, model_section, notes, oracle_aucs, pairwise_tests
from training.compare.segments import segment_rows
from training.task_balance import balancing_history


def compare(
    data_dir: str | Path,
    models: Sequence[str],
    out_dir: str | Path,
    config: CompareConfig,
    runs: int = 3,
    level: float = 0.95,
    export_dir: str | Path | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Trains every variant `runs` times (seeds config.seed, +1, ...) and writes plots to out_dir.

    Returns the report dict (plots referenced by file name, relative to out_dir).
    """
    from ranker import balancing, registry
    from training.data import read_columns
    from training.trainer import find_split, train

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {runs}")
    if not models:
        raise ConfigError("--models names no model")
    duplicates = sorted({m for m in models if list(models).count(m) > 1})
    if duplicates:
        raise ConfigError(f"--models names {duplicates[0]!r} twice")
    for name in models:  # an unknown architecture or strategy fails before any training
        architecture, strategy = split_variant(name)
        registry.get(architecture)
        if strategy is not None:
            balancing.get(strategy)
    if not (data_dir / "schema.yaml").exists():
        raise ConfigError(f"{data_dir}: no schema.yaml (run `mtrank synth --out {data_dir}`)")
    seeds = [config.seed + r for r in range(runs)]
    configs = {name: [config.for_model(name, models, seed) for seed in seeds] for name in models}
    schema = Schema.load(data_dir / "schema.yaml")
    test_path = find_split(data_dir, "test")
    if test_path.suffix not in (".parquet", ".csv"):
        raise MtrankError(f"{test_path}: compare reads Parquet or CSV test splits")
    columns = [*schema.label_columns, schema.keys.user]
    raw = read_columns(test_path, list(dict.fromkeys(columns)))
    labels = binary_outputs(schema, metrics.output_labels(schema, raw))
    rows = binary_outputs(schema, metrics.output_rows(schema, raw))  # cvr: clicked rows only
    segmented = segment_rows(data_dir, schema.keys.user, raw[schema.keys.user])
    segments, segment_info = segmented if segmented is not None else (None, None)
    task_names = [t.name for t in schema.tasks]

    temporary = None if export_dir is not None else tempfile.mkdtemp(prefix="mtrank-compare-")
    exports = Path(export_dir if export_dir is not None else str(temporary))
    variants: dict[str, VariantRuns] = {}
    try:
        for name in models:
            variant = variants[name] = VariantRuns(name)
            for r, train_config in enumerate(configs[name]):
                _say(verbose, f"compare: {name} run {r + 1}/{runs} (seed {train_config.seed})")
                architecture = split_variant(name)[0]
                result = train(
                    data_dir, architecture, exports, train_config, name=name, verbose=verbose
                )
                model = result.model
                assert model is not None
                variant.test.append(result.test)
                variant.scores.append(
                    {k: np.asarray(v).ravel() for k, v in result.test_scores.items()}
                )
                variant.seconds.append(result.seconds)
                variant.epochs.append(len(result.history.get("loss", [])))
                variant.balancing.append(balancing_history(result.history))
                variant.params = int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))
                weights = gate_weights(model, test_path, schema)
                if weights:
                    size = next(iter(weights.values())).shape[1]
                    experts = ExpertMap.of(model.hparams, task_names, size)
                    summary = summarize_gates(
                        weights, experts, segments, f"{name} seed {train_config.seed}"
                    )
                    variant.gates.append({"seed": train_config.seed, **summary})
                del model, result
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)

    mean_scores = {
        name: {out: np.mean([s[out] for s in v.scores], axis=0) for out in rows}
        for name, v in variants.items()
    }
    report: dict[str, Any] = {
        "inputs": {
            "data": str(data_dir.resolve()),
            "models": list(models),
            "runs": runs,
            "seeds": seeds,
            "epochs": config.epochs,
            "level": level,
            "test_rows": len(raw[schema.keys.user]),
            "config": config.model_dump(mode="json"),
        },
        "models": {},
        "pairwise": pairwise_tests(
            list(models),
            labels,
            rows,
            mean_scores,
            {n: v.scores for n, v in variants.items()},
            level,
        ),
        "segments": segment_info,
        "plots": {"roc": {}, "calibration": {}, "gates": {}},
        "warnings": [],
        "notes": notes(runs, level),
    }
    for name, variant in variants.items():
        report["models"][name] = model_section(
            name, variant, labels, rows, mean_scores[name], level
        )
        for gate_run in variant.gates:
            report["warnings"] += gate_run["warnings"]
    report["oracle"] = oracle_aucs(test_path, schema, labels, rows)
    report["best"] = {
        output: max(
            models,
            key=lambda n: report["models"][n]["tasks"][output]["auc"]["mean"] or -math.inf,
        )
        for output in rows
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    for output, mask in rows.items():
        y = labels[output][mask]
        curves = {n: report["models"][n]["tasks"][output]["roc"] for n in models}
        aucs = {n: report["models"][n]["tasks"][output]["auc_of_mean_scores"] for n in models}
        bins = {n: report["models"][n]["tasks"][output]["reliability"] for n in models}
        report["plots"]["roc"][output] = plot_roc(
            out_dir / f"roc_{output}.png", output, curves, aucs
        )
        report["plots"]["calibration"][output] = plot_calibration(
            out_dir / f"calibration_{output}.png", output, bins, float(y.mean()) if len(y) else 0.0
        )
    report["plots"]["balancing"] = plot_balancing(
        out_dir / "balancing.png", {n: v.balancing[0] for n, v in variants.items() if v.balancing}
    )
    for name, variant in variants.items():
        if variant.gates:
            report["plots"]["gates"][name] = plot_gates(
                out_dir / f"gates_{name}.png", name, variant.gates[0]
            )
    return report


def binary_outputs(schema: Schema, per_output: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The entries of the binary outputs (binary tasks and products), which compare measures."""
    binary = {t.name for t in schema.tasks if t.type == "binary"} | {
        p.name for p in schema.products
    }
    return {name: value for name, value in per_output.items() if name in binary}


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)
