"""Datasets mtrank's own generator did not make, for judging defaults, speed and peers on them.

    python benchmarks/datasets.py wide --out DIR [--rows 100000] [--seed 0]
    python benchmarks/datasets.py regression --out DIR [--rows 100000] [--correlation 0.5]

Each writes DIR/train.parquet, val.parquet, test.parquet (60/20/20 in row order) and schema.yaml.

* `wide`: a census-like table (the shape of UCI Census-Income, the MMoE paper's second benchmark):
  33 categorical columns (cardinalities 2 to 9,000) and 7 numeric ones (some heavy-tailed), no
  user or item ids, two binary labels `income` (~8% positive) and `married` (~40%). Each label's
  logit sums a shared and a task-specific effect per categorical value, a few pairwise crosses and
  numeric terms, so the tasks are related but not the same.
* `regression`: the synthetic experiment of Ma et al., "Modeling Task Relationships in Multi-task
  Learning with Multi-gate Mixture-of-Experts" (KDD 2018, section 4.2): x ~ N(0, I) in 100
  dimensions, two regression tasks y_k = w_k.x + sum_j sin(a_j w_k.x + b_j) + noise, whose
  weight vectors have cosine `correlation`.

Numpy and pyarrow only.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

WIDE_CATEGORICAL = 33
WIDE_NUMERIC = 7
REGRESSION_DIM = 100
REGRESSION_SINES = 10


def _write_splits(out: Path, columns: dict[str, Any], schema: dict[str, Any]) -> None:
    """60/20/20 train/val/test in row order, plus schema.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns)
    n = table.num_rows
    cuts = {
        "train": (0, int(n * 0.6)),
        "val": (int(n * 0.6), int(n * 0.8)),
        "test": (int(n * 0.8), n),
    }
    for split, (lo, hi) in cuts.items():
        pq.write_table(table.slice(lo, hi - lo), out / f"{split}.parquet")
    (out / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))


def _cardinalities(rng: np.random.Generator) -> list[int]:
    """Mostly small (2-60), some medium (100-900), three large (2,000-9,000) columns."""
    small = rng.integers(2, 60, size=WIDE_CATEGORICAL - 8).tolist()
    medium = rng.integers(100, 900, size=5).tolist()
    return [*small, *medium, 2000, 5000, 9000]


def _solve_intercept(logit: np.ndarray, rate: float) -> float:
    """The intercept b with mean(sigmoid(logit + b)) == rate (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wide(out: Path, rows: int, seed: int) -> Path:
    """The census-like two-task table described in the module docstring."""
    rng = np.random.default_rng(seed)
    cards = _cardinalities(rng)
    codes = []
    for card in cards:  # Zipf-like value frequencies, as real categorical columns have
        weights = 1.0 / np.arange(1, card + 1) ** 1.1
        codes.append(rng.choice(card, size=rows, p=weights / weights.sum()))
    numeric = np.column_stack(
        [
            rng.normal(size=rows),
            rng.normal(size=rows),
            rng.uniform(0, 1, size=rows),
            rng.lognormal(3.0, 1.0, size=rows),
            rng.lognormal(1.0, 1.5, size=rows),
            rng.exponential(2.0, size=rows),
            rng.integers(0, 100, size=rows).astype(np.float64),
        ]
    )
    logits = []
    shared = [rng.normal(0, 0.35, size=card) for card in cards]
    numeric_shared = rng.normal(0, 0.3, size=WIDE_NUMERIC)
    crosses = [tuple(rng.choice(WIDE_CATEGORICAL - 3, size=2, replace=False)) for _ in range(6)]
    z = (np.log1p(np.abs(numeric)) - np.log1p(np.abs(numeric)).mean(0)) / (
        np.log1p(np.abs(numeric)).std(0) + 1e-9
    )
    for _task in range(2):
        logit = np.zeros(rows)
        for column, card in enumerate(cards):
            own = rng.normal(0, 0.35, size=card) * (0.3 if card > 1000 else 1.0)
            logit += 0.6 * shared[column][codes[column]] + 0.8 * own[codes[column]]
        for a, b in crosses:
            table = rng.normal(0, 0.5, size=(cards[a], cards[b]))
            logit += table[codes[a], codes[b]]
        logit += z @ (0.6 * numeric_shared + 0.8 * rng.normal(0, 0.3, size=WIDE_NUMERIC))
        logit += 0.4 * np.sin(2.0 * z[:, 0]) * z[:, 1]
        logits.append(logit)
    labels = {}
    for name, logit, rate in (("income", logits[0], 0.08), ("married", logits[1], 0.40)):
        p = 1.0 / (1.0 + np.exp(-(logit + _solve_intercept(logit, rate))))
        labels[name] = (rng.uniform(size=rows) < p).astype(np.int8)
    columns: dict[str, Any] = {}
    features = []
    for column, card in enumerate(cards):
        name = f"c{column:02d}"
        values = np.array([f"{name}_{v}" for v in range(card)])
        columns[name] = pa.array(values[codes[column]]).dictionary_encode()
        if card <= 60:
            feature = {"name": name, "type": "categorical", "entity": "context",
                       "vocabulary": values.tolist()}  # fmt: skip
        else:
            feature = {"name": name, "type": "categorical", "entity": "context",
                       "num_buckets": 2 * card}  # fmt: skip
        features.append(feature)
    for k in range(WIDE_NUMERIC):
        name = f"n{k}"
        columns[name] = numeric[:, k].astype(np.float32)
        transform = "log1p" if k in (3, 4, 5) else "none"
        features.append(
            {"name": name, "type": "numeric", "entity": "context", "transform": transform}
        )
    columns.update(labels)
    schema = {
        "features": features,
        "tasks": [{"name": "income", "label": "income"}, {"name": "married", "label": "married"}],
    }
    _write_splits(out, columns, schema)
    return out


def regression(out: Path, rows: int, seed: int, correlation: float) -> Path:
    """Two regression tasks of controlled correlation (Ma et al., KDD 2018, section 4.2)."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation}")
    rng = np.random.default_rng(seed)
    u1, u2 = np.linalg.qr(rng.normal(size=(REGRESSION_DIM, 2)))[0].T  # orthonormal
    scale = 1.0
    w1 = scale * u1
    w2 = scale * (correlation * u1 + math.sqrt(1.0 - correlation**2) * u2)
    alphas, betas = rng.normal(size=REGRESSION_SINES), rng.normal(size=REGRESSION_SINES)
    x = rng.normal(size=(rows, REGRESSION_DIM)).astype(np.float32)
    columns: dict[str, Any] = {f"x{k:02d}": x[:, k] for k in range(REGRESSION_DIM)}
    for name, w in (("y1", w1), ("y2", w2)):
        t = x @ w
        signal = t + np.sin(np.outer(t, alphas) + betas).sum(axis=1)
        columns[name] = (signal + rng.normal(0, 0.1, size=rows)).astype(np.float32)
    schema = {
        "features": [
            {"name": f"x{k:02d}", "type": "numeric", "entity": "context"}
            for k in range(REGRESSION_DIM)
        ],
        "tasks": [
            {"name": "y1", "label": "y1", "type": "regression"},
            {"name": "y2", "label": "y2", "type": "regression"},
        ],
    }
    _write_splits(out, columns, schema)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("wide", "regression"):
        p = sub.add_parser(kind)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--rows", type=int, default=100_000)
        p.add_argument("--seed", type=int, default=0)
        if kind == "regression":
            p.add_argument("--correlation", type=float, default=0.5)
    args = parser.parse_args()
    if args.kind == "wide":
        wide(args.out, args.rows, args.seed)
    else:
        regression(args.out, args.rows, args.seed, args.correlation)
    print(args.out)


if __name__ == "__main__":
    main()
