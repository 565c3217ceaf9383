"""What `mtrank train --data DIR --model NAME --out MODELS` gets with no other flag, on data of other
shapes than the synthetic click log: the defaults against the previous defaults and a config tuned
by hand for the dataset, same split, same architecture.

    python benchmarks/defaults.py                      # wide (100k rows) and regression (100k rows)
    python benchmarks/defaults.py --rows 20000 --architectures mmoe --datasets wide
    python benchmarks/defaults.py --variants defaults --architectures aitm,home --out F.json

Datasets come from `benchmarks/datasets.py`: `wide` (census-like, 33 categorical + 7 numeric
columns, two binary tasks, no ids) and `regression` (the MMoE paper's two regression tasks). The
click log's comparison is `benchmarks/quality.py --config benchmarks/configs/defaults.yaml`.
Configs (benchmarks/configs/): `defaults.yaml` (empty: the defaults), `previous_defaults.yaml`
(batch 4096, 5 epochs, no crosses, dropout or embedding L2, val_loss of the last batch), and the
hand-tuned `tuned_wide.yaml`, `tuned_regression.yaml`. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets

import ranker  # noqa: F401  (Keras 2 before TensorFlow loads)
from training.config import TrainConfig
from training.trainer import train

CONFIGS = Path(__file__).parent / "configs"
RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "defaults": "defaults.yaml",
    "previous defaults": "previous_defaults.yaml",
    "tuned": "tuned_{dataset}.yaml",
}


def make(dataset: str, root: Path, rows: int, seed: int) -> Path:
    if dataset == "wide":
        return datasets.wide(root / dataset, rows, seed)
    return datasets.regression(root / dataset, rows, seed, correlation=0.5)


def headline(test: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per task its AUC (binary) or MSE (regression)."""
    return {
        task: round(m["auc"], 4) if "auc" in m else round(m["rmse"] ** 2, 4)
        for task, m in test.items()
    }


def run(data: Path, architecture: str, config_file: Path, models: Path) -> dict[str, Any]:
    config = TrainConfig.load(config_file)
    started = time.perf_counter()
    result = train(data, architecture, models, config, verbose=False)
    metadata = json.loads((result.path / "metadata.json").read_text())
    return {
        "test": result.test,
        "headline": headline(result.test),
        "epochs_run": metadata["epochs_run"],
        "best_epoch": metadata["best_epoch"],
        "batch_size": metadata["train_config"]["batch_size"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="wide,regression")
    parser.add_argument("--architectures", default="shared_bottom,mmoe,ple")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="configs to compare")
    parser.add_argument("--out", type=Path, default=RESULTS / "defaults.json")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    root = Path(tempfile.mkdtemp(prefix="mtrank-defaults-"))
    results: dict[str, Any] = {}
    print(
        "| dataset | architecture | config | batch | epochs (best) | test (AUC or MSE) | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for dataset in args.datasets.split(","):
        data = make(dataset, root, args.rows, args.seed)
        for architecture in args.architectures.split(","):
            for variant, pattern in variants.items():
                config = CONFIGS / pattern.format(dataset=dataset)
                out = run(data, architecture, config, root / "models" / variant.replace(" ", "_"))
                results.setdefault(dataset, {}).setdefault(architecture, {})[variant] = out
                shown = ", ".join(f"{k} {v}" for k, v in out["headline"].items())
                print(
                    f"| {dataset} | {architecture} | {variant} | {out['batch_size']} | "
                    f"{out['epochs_run']} ({out['best_epoch']}) | {shown} | {out['seconds']} |",
                    flush=True,
                )
                save(args, results)  # after every run: a late failure keeps the finished ones
    print(f"wrote {args.out}")


def save(args: argparse.Namespace, results: dict[str, Any]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "rows": args.rows,
        "seed": args.seed,
        "machine": platform.platform(),
        "results": results,
    }
    args.out.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
