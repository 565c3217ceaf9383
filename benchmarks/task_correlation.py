"""The MMoE paper's synthetic experiment: test loss against the correlation of two tasks.

    python benchmarks/task_correlation.py                       # 6 correlations x 3 seeds x 4 models
    python benchmarks/task_correlation.py --correlations 0.5,1.0 --seeds 0 --architectures mmoe

From Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts" (KDD 2018), section 3: x ~ N(0, I) in 100 dimensions and two regression
tasks y_k = w_k.x + sum_j sin(a_j w_k.x + b_j) + noise, whose weight vectors have cosine p
(`benchmarks/datasets.py regression`). The paper's finding: shared-bottom's loss grows as p falls,
MMoE's much less (and OMoE's in between). For each correlation and data seed, one dataset of
`--rows` rows (60/20/20 split); on it, every architecture with the paper's sizes (`PAPER_SIZES`:
8 experts of 16 units, towers of 8; a shared bottom of comparable parameter count) and otherwise
mtrank's training defaults; the test MSE, averaged over the two tasks.

Prints a table (mean and standard deviation over seeds), writes JSON (`--out`, after every run)
and the figure (`--plot`): mean test MSE against correlation, one line per architecture.
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
from datasets import regression
from quality import RESULTS

from ranker import registry
from training.config import TrainConfig
from training.trainer import train

TASKS = ("y1", "y2")
# the paper's synthetic-data models: experts (and PLE's) of one 16-unit layer, 8 of them, towers
# of 8 units; the shared bottom is one layer of 113 units (about MMoE's parameter count)
PAPER_SIZES: dict[str, dict[str, Any]] = {
    "shared_bottom": {"bottom_units": [113], "tower_units": [8]},
    "omoe": {"num_experts": 8, "expert_units": [16], "tower_units": [8]},
    "mmoe": {"num_experts": 8, "expert_units": [16], "tower_units": [8]},
    "ple": {"shared_experts": 4, "specific_experts": 2, "expert_units": [16], "tower_units": [8]},
}


def test_mse(result: Any) -> float:
    """The test MSE averaged over the two tasks (the trainer reports each task's RMSE)."""
    return float(np.mean([result.test[task]["rmse"] ** 2 for task in TASKS]))


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{architecture: {correlation: mean, std and count of the test MSE over seeds}}."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        cells = values.setdefault(run["architecture"], {})
        cells.setdefault(str(run["correlation"]), []).append(run["test_mse"])
    return {
        architecture: {
            correlation: {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)}
            for correlation, v in cells.items()
        }
        for architecture, cells in values.items()
    }


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for architecture, cells in document["summary"].items():
        correlations = sorted(cells, key=float)
        means = [cells[c]["mean"] for c in correlations]
        stds = [cells[c]["std"] for c in correlations]
        axes.errorbar(
            [float(c) for c in correlations],
            means,
            yerr=stds,
            marker="o",
            capsize=3,
            label=architecture,
        )
    axes.set_xlabel("task correlation (cosine of the tasks' weight vectors)")
    axes.set_ylabel("test MSE, mean of the two tasks")
    axes.set_title(
        f"MMoE paper's synthetic data, {document['rows']:,} rows, {len(document['seeds'])} seeds"
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seeds", default="0,1,2", help="data seeds (and training seeds)")
    parser.add_argument("--correlations", default="0.5,0.6,0.7,0.8,0.9,1.0")
    parser.add_argument("--architectures", default=",".join(PAPER_SIZES))
    parser.add_argument("--epochs", type=int, default=20, help="the most epochs (early stopping)")
    parser.add_argument("--out", type=Path, default=RESULTS / "task_correlation.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "task_correlation.png")
    args = parser.parse_args()
    architectures = args.architectures.split(",")
    for name in architectures:
        registry.get(name)  # an unknown name fails before any data is made
    seeds = [int(s) for s in args.seeds.split(",")]
    document: dict[str, Any] = {
        "rows": args.rows,
        "seeds": seeds,
        "sizes": {name: PAPER_SIZES.get(name, {}) for name in architectures},
        "config": TrainConfig(epochs=args.epochs).model_dump(mode="json"),
        "runs": [],
    }

    def save() -> None:
        document["summary"] = summary(document["runs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2))

    print(f"{'correlation':>11} {'seed':>4} {'model':<14} {'test MSE':>9} {'epochs':>6} {'s':>5}")
    for correlation in (float(c) for c in args.correlations.split(",")):
        for seed in seeds:
            data = regression(
                Path(tempfile.mkdtemp(prefix="mtrank-corr-")), args.rows, seed, correlation
            )
            models = Path(tempfile.mkdtemp(prefix="mtrank-corr-models-"))
            try:
                for architecture in architectures:
                    hparams = PAPER_SIZES.get(architecture, {})
                    config = TrainConfig(hparams=hparams, seed=seed, epochs=args.epochs)
                    started = time.perf_counter()
                    result = train(data, architecture, models, config, verbose=False)
                    run = {
                        "correlation": correlation,
                        "seed": seed,
                        "architecture": architecture,
                        "test_mse": test_mse(result),
                        "test": result.test,
                        "epochs_run": len(result.history.get("loss", [])),
                        "seconds": time.perf_counter() - started,
                    }
                    document["runs"].append(run)
                    save()
                    print(
                        f"{correlation:>11.2f} {seed:>4} {architecture:<14} "
                        f"{run['test_mse']:>9.4f} {run['epochs_run']:>6} {run['seconds']:>5.0f}",
                        flush=True,
                    )
            finally:
                shutil.rmtree(data, ignore_errors=True)
                shutil.rmtree(models, ignore_errors=True)
    print("\nmean test MSE over seeds (std)")
    correlations = sorted({str(r["correlation"]) for r in document["runs"]}, key=float)
    print(f"{'model':<14}" + "".join(f"{c:>16}" for c in correlations))
    for architecture, cells in document["summary"].items():
        row = "".join(f"{cells[c]['mean']:>9.4f} ({cells[c]['std']:.4f})" for c in correlations)
        print(f"{architecture:<14}{row}")
    plot(document, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
