"""Offline A/B comparison of architectures (`mtrank compare`): R seeds each, same split, honest intervals.

    for each variant, for seed in seeds:  train(DIR, variant) --> test scores, gate weights
    per variant and output: AUC mean with a 95% t-interval over seeds (R = 1: DeLong's interval
        on the test set), logloss, GAUC, calibration, ECE (means and intervals over seeds)
    per output and pair of variants: DeLong's test on the SEED-AVERAGED test scores
    per gated variant: mean gate weight per expert per task, overall and by user activity tercile,
        gate entropy, expert-collapse warnings

Why seed-averaged scores for the pairwise test: one seed's scores carry that seed's training noise,
so two runs of the SAME architecture often differ "significantly" on a large test set. Averaging the
R runs' probabilities per row removes most of that noise, and both variants get the same treatment.
The per-seed p-values (seed r of A against seed r of B) are in the report too. DeLong only measures
test-set sampling noise; the t-interval over seeds measures training noise: read both.

Why gates are reported per seed (the plots show the first): experts are interchangeable, so
"expert 2" of one seed is not "expert 2" of another, and averaging gate weights over seeds would
blur a sharp gate into a uniform-looking one. Collapse warnings are checked on every seed.

Statistics and the report dict live here; the plots (matplotlib, Agg, no display) too. The CLI
(`training/commands/compare.py`) parses flags and writes report.json and report.html.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ranker.errors import ConfigError, MtrankError
from ranker.schema import Schema
from training import metrics
from training.config import TrainConfig

SEGMENT_FEATURE = "activity"
ORACLE_COLUMNS = {"ctr": "p_click", "cvr": "p_conversion"}  # `mtrank synth`'s true probabilities
SEGMENT_NAMES = ("low", "mid", "high")
ROC_POINTS = 400
CALIBRATION_BINS = 10
MAX_PEAK_WEIGHT = 0.9  # a task whose gate puts more than this on one expert is flagged
COLLAPSE_SHARE = 0.25  # an expert below COLLAPSE_SHARE / E for every task is flagged


# ---- config --------------------------------------------------------------------------------------


class CompareConfig(TrainConfig):
    """A training config shared by every variant, plus per-architecture hyperparameter overrides.

    `hparams` keys apply to every variant whose architecture has them (the common ones, such as
    tower_units and dropout, apply to all); a key no compared architecture has is an error.
    `hparams_by_model: {mmoe: {num_experts: 8}}` overrides them for one variant.
    """

    hparams_by_model: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def load_compare(cls, path: str | Path | None) -> CompareConfig:
        config = cls.load(path)
        if config.architecture is not None:
            raise ConfigError(f"{path}: 'architecture' has no meaning for compare (use --models)")
        return config

    def for_model(self, architecture: str, models: Sequence[str], seed: int) -> TrainConfig:
        """The TrainConfig of one variant and seed: its share of `hparams`, then its overrides."""
        from ranker import registry

        accepted = set(registry.get(architecture).Config.model_fields)
        known = set().union(*(registry.get(m).Config.model_fields for m in models))
        unknown = sorted(set(self.hparams) - known)
        if unknown:
            raise ConfigError(
                f"hparams key {unknown[0]!r} belongs to none of the compared models "
                f"({', '.join(models)})"
            )
        for name in self.hparams_by_model:
            if name not in models:
                raise ConfigError(
                    f"hparams_by_model key {name!r} is not a compared model ({', '.join(models)})"
                )
        hparams = {k: v for k, v in self.hparams.items() if k in accepted}
        hparams.update(self.hparams_by_model.get(architecture, {}))
        base = self.model_dump(exclude={"hparams_by_model"})
        base.update(hparams=hparams, seed=seed)
        return TrainConfig.model_validate(base)


# ---- statistics ----------------------------------------------------------------------------------


def t_quantile(probability: float, df: int) -> float:
    """The Student-t quantile (inverse CDF) with `df` degrees of freedom, by bisection."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _t_cdf(mid, df) < probability else (low, mid)
    return 0.5 * (low + high)


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for t >= 0: 1 - I_x(df/2, 1/2) / 2 with x = df / (df + t^2)."""
    return 1.0 - 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * result / a


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, standard deviation and the t-interval of the mean over seeds (None with one value)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = len(finite)
    if n == 0:
        return {"mean": None, "std": None, "low": None, "high": None, "runs": list(values)}
    mean = float(finite.mean())
    if n == 1:
        return {"mean": mean, "std": None, "low": None, "high": None, "runs": list(values)}
    std = float(finite.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "runs": list(values)}


def output_rows(schema: Schema, labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per binary output, the boolean mask of the rows it is measured on (as `metrics.evaluate`)."""
    n = len(next(iter(labels.values())))
    rows: dict[str, np.ndarray] = {}
    for task in schema.tasks:
        if task.type != "binary":
            continue
        mask = np.ones(n, dtype=bool)
        if task.condition is not None:
            mask = np.asarray(labels[task.condition], dtype=np.float64) == 1.0
        rows[task.name] = mask
    for product in schema.products:
        rows[product.name] = np.ones(n, dtype=bool)
    return rows


def output_labels(schema: Schema, labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per binary output, its 0/1 labels over all rows (a product: the product of its tasks')."""
    result = {
        t.name: np.asarray(labels[t.label], np.float64) for t in schema.tasks if t.type == "binary"
    }
    for product in schema.products:
        tasks = [schema.task(name) for name in product.of]
        result[product.name] = np.prod([np.asarray(labels[t.label], np.float64) for t in tasks], 0)
    return result


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


def roc_curve(labels: np.ndarray, scores: np.ndarray, points: int = ROC_POINTS) -> dict[str, Any]:
    """False and true positive rates at up to `points` thresholds (tied scores stay together)."""
    order = np.argsort(-scores, kind="mergesort")
    y, s = labels[order], scores[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp, fp = np.cumsum(y)[last_of_tie], np.cumsum(1.0 - y)[last_of_tie]
    if tp[-1] <= 0 or fp[-1] <= 0:
        return {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}
    keep = np.unique(np.linspace(0, len(tp) - 1, min(points, len(tp))).astype(int))
    fpr = np.r_[0.0, fp[keep] / fp[-1]]
    tpr = np.r_[0.0, tp[keep] / tp[-1]]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def reliability(
    labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, list[float]]:
    """Mean score and observed rate in `bins` equal-frequency bins of the score (a reliability curve)."""
    n = len(labels)
    if n == 0:
        return {"predicted": [], "observed": [], "count": []}
    order = np.argsort(scores, kind="mergesort")
    which = np.arange(n) * bins // n
    count = np.bincount(which, minlength=bins)
    keep = count > 0
    predicted = np.bincount(which, scores[order], bins)[keep] / count[keep]
    observed = np.bincount(which, labels[order], bins)[keep] / count[keep]
    return {
        "predicted": [float(v) for v in predicted],
        "observed": [float(v) for v in observed],
        "count": [int(v) for v in count[keep]],
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


# ---- gates ---------------------------------------------------------------------------------------


@dataclass
class ExpertMap:
    """Names every expert once, and maps each gate's local expert index to those names.

    MMoE and OMoE gates weigh the same E shared experts. A CGC/PLE task gate weighs its task's
    `specific` experts then the `shared` ones, so expert names are `ctr:0`, `cvr:0`, `shared:0`, ...
    and a task's gate never reaches another task's specific experts.
    """

    names: list[str]
    tasks: list[str]
    specific: int = 0

    @classmethod
    def of(cls, hparams: Any, tasks: Sequence[str], gate_size: int) -> ExpertMap:
        specific = getattr(hparams, "specific_experts", None)
        shared = getattr(hparams, "shared_experts", None)
        if specific is None or shared is None:
            return cls([f"e{j}" for j in range(gate_size)], list(tasks))
        names = [f"{t}:{i}" for t in tasks for i in range(specific)]
        names += [f"shared:{j}" for j in range(shared)]
        return cls(names, list(tasks), specific)

    def columns(self, gate_key: str, gate_size: int) -> list[str]:
        """The expert names behind a gate's [B, E] weights, in order."""
        if not self.specific and len(self.names) == gate_size:
            return self.names
        task = gate_key.split("/")[0]
        own = [f"{task}:{i}" for i in range(self.specific)]
        return own + [n for n in self.names if n.startswith("shared:")]


def segment_rows(
    data_dir: Path, user_key: str, user_ids: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Activity tercile (0 low, 1 mid, 2 high) of each test row, from users.parquet; None if absent.

    Cuts are the terciles of `activity` over the test ROWS (so each segment holds about a third of
    the impressions); a user missing from users.parquet gets -1 and belongs to no segment.
    """
    from training.data import read_columns

    path = data_dir / "users.parquet"
    if not path.exists():
        return None
    try:
        users = read_columns(path, [user_key, SEGMENT_FEATURE])
    except MtrankError:
        return None
    keys = np.asarray(users[user_key]).astype(str)
    activity = np.asarray(users[SEGMENT_FEATURE], dtype=np.float64)
    order = np.argsort(keys)
    keys, activity = keys[order], activity[order]
    wanted = np.asarray(user_ids).astype(str)
    where = np.clip(np.searchsorted(keys, wanted), 0, max(len(keys) - 1, 0))
    found = keys[where] == wanted
    row_activity = np.where(found, activity[where], np.nan)
    known = row_activity[found]
    if len(known) < len(SEGMENT_NAMES):
        return None
    cuts = np.quantile(known, [1 / 3, 2 / 3])
    segment = np.where(found, np.searchsorted(cuts, row_activity, side="right"), -1)
    edges = [float(known.min()), *map(float, cuts), float(known.max())]
    info = {
        "feature": SEGMENT_FEATURE,
        "how": "terciles of users.parquet activity over the test rows",
        "segments": {
            name: {
                "range": [edges[k], edges[k + 1]],
                "rows": int(np.sum(segment == k)),
            }
            for k, name in enumerate(SEGMENT_NAMES)
        },
    }
    return segment.astype(np.int64), info


def gate_weights(model: Any, test_path: Path, schema: Schema) -> dict[str, np.ndarray]:
    """Every gate's weights [N, E] on the test rows, in file order ({} for ungated models)."""
    from ranker.keras_compat import tf
    from training.data import ReadOptions, make_dataset, reader_errors

    @tf.function(reduce_retracing=True)
    def gates(features: Mapping[str, Any]) -> dict[str, Any]:
        return model.gate_weights(features)

    dataset = make_dataset(test_path, schema, ReadOptions(batch_size=8192, labels=False))
    parts: dict[str, list[np.ndarray]] = {}
    with reader_errors():
        for features in dataset:
            batch = gates(features)
            if not batch:
                return {}
            for key, value in batch.items():
                parts.setdefault(key, []).append(np.asarray(value, dtype=np.float64))
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


def summarize_gates(
    weights: Mapping[str, np.ndarray],
    experts: ExpertMap,
    segments: np.ndarray | None,
    label: str,
) -> dict[str, Any]:
    """Mean weight per expert per gate (overall and by segment), entropy, and collapse warnings."""
    gates: dict[str, Any] = {}
    for key, w in weights.items():
        size = w.shape[1]
        columns = experts.columns(key, size)
        mean = w.mean(axis=0)
        row_entropy = -np.sum(w * np.log(np.clip(w, 1e-12, 1.0)), axis=1)
        entry: dict[str, Any] = {
            "experts": columns,
            "weights": dict(zip(columns, map(float, mean), strict=True)),
            "entropy": float(row_entropy.mean()),
            "entropy_normalized": float(row_entropy.mean() / math.log(size)) if size > 1 else 0.0,
            "by_segment": None,
        }
        if segments is not None:
            entry["by_segment"] = {
                name: dict(zip(columns, map(float, w[segments == k].mean(axis=0)), strict=True))
                for k, name in enumerate(SEGMENT_NAMES)
                if np.any(segments == k)
            }
        gates[key] = entry
    return {"experts": experts.names, "gates": gates, "warnings": collapse_warnings(gates, label)}


def collapse_warnings(gates: Mapping[str, Any], label: str) -> list[str]:
    """An expert below COLLAPSE_SHARE / E of every gate that reaches it (per level), or a gate
    putting more than MAX_PEAK_WEIGHT on one expert."""
    warnings = []
    for key, entry in gates.items():
        expert, peak = max(entry["weights"].items(), key=lambda item: item[1])
        if peak > MAX_PEAK_WEIGHT:
            warnings.append(
                f"{label}: the {_gate_label(key)} gate puts {peak:.2f} on expert {expert}"
            )
    levels: dict[str, list[str]] = {}
    for key in gates:
        levels.setdefault(key.partition("/")[2], []).append(key)
    for level, keys in levels.items():
        reach: dict[str, list[bool]] = {}
        for key in keys:
            size = len(gates[key]["weights"])
            for expert, value in gates[key]["weights"].items():
                reach.setdefault(expert, []).append(value < COLLAPSE_SHARE / size)
        where = f" at {level}" if level else ""
        for expert, low in reach.items():
            if all(low):
                warnings.append(
                    f"{label}: expert {expert}{where} is nearly unused "
                    f"(under 1/(4E) of every gate that reaches it)"
                )
    return warnings


def _gate_label(key: str) -> str:
    task, _, level = key.partition("/")
    return f"{task} ({level})" if level else task


# ---- the comparison ------------------------------------------------------------------------------


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
    from ranker import registry
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
    for name in models:
        registry.get(name)  # an unknown name fails before any training
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
    labels, rows = output_labels(schema, raw), output_rows(schema, raw)
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
                result = train(data_dir, name, exports, train_config, name=name, verbose=verbose)
                model = result.model
                assert model is not None
                variant.test.append(result.test)
                variant.scores.append(
                    {k: np.asarray(v).ravel() for k, v in result.test_scores.items()}
                )
                variant.seconds.append(result.seconds)
                variant.epochs.append(len(result.history.get("loss", [])))
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
        "notes": _notes(runs, level),
    }
    for name, variant in variants.items():
        report["models"][name] = _model_section(
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
    for name, variant in variants.items():
        if variant.gates:
            report["plots"]["gates"][name] = plot_gates(
                out_dir / f"gates_{name}.png", name, variant.gates[0]
            )
    return report


def _model_section(
    name: str,
    variant: VariantRuns,
    labels: Mapping[str, np.ndarray],
    rows: Mapping[str, np.ndarray],
    mean_scores: Mapping[str, np.ndarray],
    level: float,
) -> dict[str, Any]:
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
        "tasks": tasks,
        "gates": (
            {"shown_seed": variant.gates[0]["seed"], "runs": variant.gates}
            if variant.gates
            else None
        ),
    }


def _notes(runs: int, level: float) -> list[str]:
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


# ---- plots ---------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas: no pyplot, no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _save_line_plot(figure: Any, ax: Any, path: Path, legend: str) -> str:
    """Legend, grid, tight layout; writes the PNG and returns its file name (for the HTML)."""
    ax.legend(loc=legend, fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path.name


def plot_roc(
    path: Path,
    output: str,
    curves: Mapping[str, Mapping[str, list[float]]],
    aucs: Mapping[str, float],
) -> str:
    figure = _figure(5.2, 5.0)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbb", linestyle="--", linewidth=1)
    for name, curve in curves.items():
        ax.plot(curve["fpr"], curve["tpr"], linewidth=1.6, label=f"{name} (AUC {aucs[name]:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(f"ROC, {output} (seed-averaged scores)")
    return _save_line_plot(figure, ax, path, legend="lower right")


def plot_calibration(
    path: Path, output: str, bins: Mapping[str, Mapping[str, list[float]]], base_rate: float
) -> str:
    figure = _figure(5.2, 5.0)
    ax = figure.add_subplot()
    top = max([base_rate, *(max(b["predicted"] + b["observed"], default=0) for b in bins.values())])
    top = min(1.0, top * 1.08 or 1.0)
    ax.plot([0, top], [0, top], color="#bbb", linestyle="--", linewidth=1, label="calibrated")
    for name, b in bins.items():
        ax.plot(
            b["predicted"], b["observed"], marker="o", markersize=3.5, linewidth=1.4, label=name
        )
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted", ylabel="observed rate")
    ax.set_title(f"Reliability, {output} ({CALIBRATION_BINS} equal-count bins)")
    return _save_line_plot(figure, ax, path, legend="upper left")


def gate_matrix(
    gate_run: Mapping[str, Any], segment: str | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """(gate rows, expert columns, mean weights) with NaN where a gate cannot reach an expert."""
    gates = gate_run["gates"]
    keys = list(gates)
    columns = list(gate_run["experts"])
    matrix = np.full((len(keys), len(columns)), np.nan)
    for i, key in enumerate(keys):
        weights = gates[key]["weights"] if segment is None else gates[key]["by_segment"][segment]
        for expert, value in weights.items():
            matrix[i, columns.index(expert)] = value
    return [_gate_label(k) for k in keys], columns, matrix


def plot_gates(path: Path, name: str, gate_run: Mapping[str, Any]) -> str:
    """Heatmaps of mean gate weight (gates x experts): all test rows, then each activity tercile."""
    gates = gate_run["gates"]
    first = next(iter(gates.values()))
    panels: list[str | None] = [None]
    if first["by_segment"]:
        panels += list(first["by_segment"])
    row_names, columns, _ = gate_matrix(gate_run)
    width = max(3.2, 0.62 * len(columns) + 1.6)
    height = max(2.2, 0.42 * len(row_names) + 1.4)
    figure = _figure(width * len(panels) + 0.8, height)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, segment in zip(axes, panels, strict=True):
        _, _, matrix = gate_matrix(gate_run, segment)
        image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_facecolor("#e6e6e6")
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(row_names)), row_names if ax is axes[0] else [], fontsize=8)
        title = "all test rows" if segment is None else f"{segment} activity"
        ax.set_title(title, fontsize=9)
        for (i, j), value in np.ndenumerate(matrix):
            if math.isfinite(value):
                colour = "white" if value < 0.55 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.suptitle(f"{name}: mean gate weight per expert (seed {gate_run['seed']})", fontsize=10)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="mean weight")
    figure.savefig(path, bbox_inches="tight")
    return path.name


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)
