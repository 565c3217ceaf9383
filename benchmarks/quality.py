"""Model quality against the generator's oracle: test AUC of every architecture / the AUC of the true
probabilities (`p_click`, `p_click * p_conversion`) on the same test rows.

    python benchmarks/quality.py                       # synth --rows 400000 --seed 0, all architectures
    python benchmarks/quality.py --data DIR --architectures mmoe,ple --config benchmarks/configs/quality.yaml
    python benchmarks/quality.py --data DIR --schema variant.yaml --train-seed 1   # same rows, another schema

Target (issue 3): MMoE, PLE, ESMM and shared-bottom at >= 0.97 of the oracle AUC for CTR and CTCVR.
CTCVR has few positives in a 40k-row test split (about 150 at 400k rows), so its AUC carries a
DeLong 95% interval of several points; the table prints it. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ranker import registry
from ranker.schema import Schema
from training.cli import main as mtrank
from training.config import TrainConfig
from training.data import read_columns
from training.metrics import auc, auc_confidence_interval
from training.trainer import train

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quality.yaml"


def oracle(test_file: Path) -> dict[str, float]:
    cols = read_columns(test_file, ["click", "conversion", "p_click", "p_conversion"])
    click = cols["click"].astype(float)
    both = click * cols["conversion"].astype(float)
    return {
        "ctr": auc(click, cols["p_click"]),
        "ctcvr": auc(both, cols["p_click"] * cols["p_conversion"]),
        "cvr": auc(cols["conversion"][click == 1].astype(float), cols["p_conversion"][click == 1]),
        "ctcvr_positives": float(both.sum()),
    }


def with_schema(data: Path, schema: Path) -> Path:
    """A directory that links every file of `data` but reads `schema` as its schema.yaml."""
    Schema.load(schema)  # a bad variant fails here, before any data is linked
    view = Path(tempfile.mkdtemp(prefix="mtrank-quality-data-"))
    for path in data.iterdir():
        if path.name != "schema.yaml":
            (view / path.name).symlink_to(path.resolve())
    shutil.copyfile(schema, view / "schema.yaml")
    return view


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architectures", default=",".join(registry.names()))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--schema", type=Path, help="train with this schema.yaml instead of DATA's")
    parser.add_argument("--train-seed", type=int, help="overrides the config's training seed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"))
    args = parser.parse_args()

    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="mtrank-quality-"))
        mtrank(["synth", "--out", str(data), "--rows", str(args.rows), "--seed", str(args.seed)])
    if args.schema is not None:
        data = with_schema(data, args.schema)
    config = TrainConfig.load(args.config)
    if args.train_seed is not None:
        config = config.model_copy(update={"seed": args.train_seed})
    truth = oracle(data / "test.parquet")
    models = Path(tempfile.mkdtemp(prefix="mtrank-quality-models-"))
    labels = read_columns(data / "test.parquet", ["click", "conversion"])
    results: dict[str, Any] = {
        "oracle": truth,
        "config": config.model_dump(mode="json"),
        "schema": str(args.schema or data / "schema.yaml"),
        "models": {},
    }
    header = f"{'architecture':<14} {'CTR AUC':>8} {'/oracle':>8} {'CTCVR AUC':>10} {'/oracle':>8} {'CTCVR 95% CI':>15} {'CVR AUC':>8} {'epochs':>6} {'seconds':>8}"
    print(
        f"oracle: CTR {truth['ctr']:.4f}  CTCVR {truth['ctcvr']:.4f}  CVR {truth['cvr']:.4f}  ({truth['ctcvr_positives']:.0f} CTCVR positives)"
    )
    print(header)
    for name in args.architectures.split(","):
        started = time.perf_counter()
        result = train(data, name, models, config, verbose=False)
        both = labels["click"].astype(float) * labels["conversion"].astype(float)
        _, low, high = auc_confidence_interval(both, np.asarray(result.test_scores["ctcvr"]))
        test = result.test
        row = {
            "ctr_auc": test["ctr"]["auc"],
            "ctr_ratio": test["ctr"]["auc"] / truth["ctr"],
            "ctcvr_auc": test["ctcvr"]["auc"],
            "ctcvr_ratio": test["ctcvr"]["auc"] / truth["ctcvr"],
            "ctcvr_ci95": [low, high],
            "cvr_auc": test["cvr"]["auc"],
            "epochs_run": len(result.history.get("loss", [])),
            "seconds": time.perf_counter() - started,
            "history": result.history,
            "test": test,
        }
        results["models"][name] = row
        print(
            f"{name:<14} {row['ctr_auc']:>8.4f} {row['ctr_ratio']:>8.3f} {row['ctcvr_auc']:>10.4f} "
            f"{row['ctcvr_ratio']:>8.3f} {f'[{low:.3f}, {high:.3f}]':>15} {row['cvr_auc']:>8.4f} "
            f"{row['epochs_run']:>6} {row['seconds']:>8.0f}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
