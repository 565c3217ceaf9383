"""Model quality against the generator's oracle: test AUC of every architecture / the AUC of the true
probabilities (`p_click`, `p_click * p_conversion`) on the same test rows.

    python benchmarks/quality.py                       # synth --rows 400000 --seed 0, all architectures
    python benchmarks/quality.py --data DIR --architectures mmoe,ple --config benchmarks/configs/quality.yaml
    python benchmarks/quality.py --data DIR --schema variant.yaml --train-seed 1   # same rows, another schema
    python benchmarks/quality.py --seeds 1,2,3 --architectures mmoe,ple   # one world per data seed

With `--seeds`, each seed synthesizes its own world (users, items, logs, test split), the table is
printed per seed, and a summary gives each architecture's mean, min and max ratio over the seeds
(benchmarks/results/quality_seeds.json): the CTCVR ratio of one test split moves by +-0.01-0.02
from seed to seed, more than most changes being compared.

Target (issue 3): MMoE, PLE, ESMM and shared-bottom at >= 0.97 of the oracle AUC for CTR and CTCVR.
CTCVR has few positives in a 40k-row test split (about 150 at 400k rows), so its AUC carries a
DeLong 95% interval of several points; the table prints it. Prints a table and writes JSON.

`E/oracle` removes that label noise: the AUC expected over label draws from the true probabilities
(`training.metrics.expected_auc`, every pair of rows weighted by p_i * (1 - p_j)), the model's over
the oracle's, on the same rows. The JSON also holds, per model, that ratio for CTCVR with the true
CVR in place of the model's (`..._true_cvr`) and with the true CTR (`..._true_ctr`): which of the
two factors loses the CTCVR AUC. And `observable_ceiling`: the truth with every per-id latent term
set to 0, what a model of the observable features could reach at most.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import synthetic

from ranker import registry
from ranker.schema import Schema
from training.config import TrainConfig
from training.data import read_columns
from training.metrics import auc, auc_confidence_interval, expected_auc
from training.synth.true_model import TrueModel
from training.trainer import train

# each model's ratios to the oracle: of the test AUC, and of the AUC expected over label draws
RATIOS = (
    "ctr_ratio",
    "ctcvr_ratio",
    "ctr_expected_ratio",
    "ctcvr_expected_ratio",
    "ctcvr_expected_ratio_true_cvr",
    "ctcvr_expected_ratio_true_ctr",
)
# what the oracle, the observable ceiling and the models' ratios read from the test split
TEST_COLUMNS = [
    "click", "conversion", "p_click", "p_conversion", "user_id", "item_id", "device", "hour", "position",
]  # fmt: skip
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quality.yaml"
RESULTS = Path(__file__).parent / "results"


def oracle(cols: dict[str, np.ndarray]) -> dict[str, float]:
    """The true probabilities' AUCs on the test rows `cols` (labels, `p_click`, `p_conversion`)."""
    click = cols["click"].astype(float)
    both = click * cols["conversion"].astype(float)
    truth_ctcvr = cols["p_click"] * cols["p_conversion"]
    return {
        "ctr": auc(click, cols["p_click"]),
        "ctcvr": auc(both, truth_ctcvr),
        "cvr": auc(cols["conversion"][click == 1].astype(float), cols["p_conversion"][click == 1]),
        "ctcvr_positives": float(both.sum()),
        "ctr_expected": expected_auc(cols["p_click"], cols["p_click"]),
        "ctcvr_expected": expected_auc(truth_ctcvr, truth_ctcvr),
    }


LATENT = {
    "users": ("factor", "conv_factor", "bias"),
    "items": ("factor", "conv_factor", "quality", "conv_quality"),
}


def observable_ceiling(
    data: Path, cols: dict[str, np.ndarray], oracle_expected: dict[str, float]
) -> dict[str, float]:
    """The expected-AUC ratio, on the test rows `cols`, of the generator's probabilities with every
    per-id latent term (factors, biases, qualities) set to 0: about the most a model of the
    observable features can reach. `oracle_expected`: `oracle(cols)`."""
    truth = TrueModel.load(data)
    latent = dataclasses.replace(
        truth,
        users=dataclasses.replace(
            truth.users,
            **{key: np.zeros_like(getattr(truth.users, key)) for key in LATENT["users"]},
        ),
        items=dataclasses.replace(
            truth.items,
            **{key: np.zeros_like(getattr(truth.items, key)) for key in LATENT["items"]},
        ),
    )
    rows = (cols["user_id"], cols["item_id"], cols["device"])
    p_click = latent.p_click(*rows, cols["hour"], cols["position"])
    p_conversion = latent.p_conversion(*rows)
    truth_ctcvr = cols["p_click"] * cols["p_conversion"]
    return {
        "ctr_expected_ratio": expected_auc(cols["p_click"], p_click)
        / oracle_expected["ctr_expected"],
        "ctcvr_expected_ratio": expected_auc(truth_ctcvr, p_click * p_conversion)
        / oracle_expected["ctcvr_expected"],
    }


def ratios(
    labels: dict[str, np.ndarray],
    truth: dict[str, float],
    test_scores: dict[str, Any],
    test: dict[str, dict[str, float]],
) -> dict[str, float]:
    """A model's test AUCs and its ratios to the oracle's (`RATIOS`) on the test split's rows."""
    p_click, p_conversion = labels["p_click"], labels["p_conversion"]
    truth_ctcvr = p_click * p_conversion
    scores = {key: np.asarray(test_scores[key]) for key in ("ctr", "cvr", "ctcvr")}
    return {
        "ctr_auc": test["ctr"]["auc"],
        "ctr_ratio": test["ctr"]["auc"] / truth["ctr"],
        "ctcvr_auc": test["ctcvr"]["auc"],
        "ctcvr_ratio": test["ctcvr"]["auc"] / truth["ctcvr"],
        "ctr_expected_ratio": expected_auc(p_click, scores["ctr"]) / truth["ctr_expected"],
        "ctcvr_expected_ratio": expected_auc(truth_ctcvr, scores["ctcvr"])
        / truth["ctcvr_expected"],
        # where the CTCVR gap is: this model's CTR with the true CVR, and the other way round
        "ctcvr_expected_ratio_true_cvr": expected_auc(truth_ctcvr, scores["ctr"] * p_conversion)
        / truth["ctcvr_expected"],
        "ctcvr_expected_ratio_true_ctr": expected_auc(truth_ctcvr, p_click * scores["cvr"])
        / truth["ctcvr_expected"],
        "cvr_auc": test["cvr"]["auc"],
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
    synthetic.add_arguments(parser)
    parser.add_argument(
        "--seeds", help="comma-separated data seeds: one synth and one table each, then a summary"
    )
    parser.add_argument("--architectures", default=",".join(registry.names()))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--schema", type=Path, help="train with this schema.yaml instead of DATA's")
    parser.add_argument("--train-seed", type=int, help="overrides the config's training seed")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/quality[_seeds].json")
    args = parser.parse_args()

    config = TrainConfig.load(args.config)
    if args.train_seed is not None:
        config = config.model_copy(update={"seed": args.train_seed})
    architectures = args.architectures.split(",")
    if args.seeds is None:
        out = args.out or RESULTS / "quality.json"
        data = synthetic.data_dir(args)
        evaluate(data, architectures, config, args.schema, out, {})
        print(f"wrote {out}")
        return
    if args.data is not None:
        parser.error("--seeds synthesizes data for each seed: leave out --data")
    out = args.out or RESULTS / "quality_seeds.json"
    results: dict[str, Any] = {"rows": args.rows, "seeds": {}}
    for seed in (int(s) for s in args.seeds.split(",")):
        print(f"\n== data seed {seed} ==")
        results["seeds"][str(seed)] = {}
        evaluate(
            synthetic.synth(args.rows, seed), architectures, config, args.schema, out,
            results, results["seeds"][str(seed)],
        )  # fmt: skip
        results["summary"] = summary(results["seeds"])
        out.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nover data seeds {args.seeds}: mean [min, max] of the ratio to the oracle AUC")
    print(f"{'architecture':<14} " + " ".join(f"{key:>22}" for key in RATIOS))
    for name, row in results["summary"].items():
        cells = (
            f"{row[key]['mean']:.3f} [{row[key]['min']:.3f},{row[key]['max']:.3f}]"
            for key in RATIOS
        )
        print(f"{name:<14} " + " ".join(f"{cell:>22}" for cell in cells))
    print(f"wrote {out}")


def summary(seeds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per architecture: mean, min and max over seeds of the CTR and CTCVR ratios to the oracle."""
    names = dict.fromkeys(name for result in seeds.values() for name in result.get("models", {}))
    out: dict[str, Any] = {}
    for name in names:
        rows = [result["models"][name] for result in seeds.values() if name in result["models"]]
        out[name] = {
            key: {
                "mean": float(np.mean([row[key] for row in rows])),
                "min": min(row[key] for row in rows),
                "max": max(row[key] for row in rows),
                "seeds": len(rows),
            }
            for key in RATIOS
        }
    return out


def evaluate(
    data: Path,
    architectures: list[str],
    config: TrainConfig,
    schema: Path | None,
    out: Path,
    document: dict[str, Any],
    results: dict[str, Any] | None = None,
) -> None:
    """Train each architecture on `data` and fill `results` (default: `document` itself) with the
    oracle and each model's figures; `document` is written to `out` after each model."""
    results = document if results is None else results
    if schema is not None:
        data = with_schema(data, schema)
    labels = read_columns(data / "test.parquet", TEST_COLUMNS)
    truth = oracle(labels)
    ceiling = observable_ceiling(data, labels, truth)
    both = labels["click"].astype(float) * labels["conversion"].astype(float)
    models = Path(tempfile.mkdtemp(prefix="mtrank-quality-models-"))
    results.update(
        {
            "oracle": truth,
            "observable_ceiling": ceiling,
            "config": config.model_dump(mode="json"),
            "schema": str(schema or data / "schema.yaml"),
            "models": {},
        }
    )
    header = f"{'architecture':<14} {'CTR AUC':>8} {'/oracle':>8} {'E/oracle':>8} {'CTCVR AUC':>10} {'/oracle':>8} {'E/oracle':>8} {'CTCVR 95% CI':>15} {'CVR AUC':>8} {'epochs':>6} {'seconds':>8}"
    print(
        f"oracle: CTR {truth['ctr']:.4f}  CTCVR {truth['ctcvr']:.4f}  CVR {truth['cvr']:.4f}  ({truth['ctcvr_positives']:.0f} CTCVR positives)"
    )
    print(
        f"the truth without its per-id latent terms: E/oracle CTR {ceiling['ctr_expected_ratio']:.3f}"
        f"  CTCVR {ceiling['ctcvr_expected_ratio']:.3f}"
    )
    print(header)
    for name in architectures:
        started = time.perf_counter()
        result = train(data, name, models, config, verbose=False)
        _, low, high = auc_confidence_interval(both, np.asarray(result.test_scores["ctcvr"]))
        row = {
            **ratios(labels, truth, result.test_scores, result.test),
            "ctcvr_ci95": [low, high],
            "epochs_run": len(result.history.get("loss", [])),
            "seconds": time.perf_counter() - started,
            "history": result.history,
            "test": result.test,
        }
        results["models"][name] = row
        print(
            f"{name:<14} {row['ctr_auc']:>8.4f} {row['ctr_ratio']:>8.3f} {row['ctr_expected_ratio']:>8.3f} "
            f"{row['ctcvr_auc']:>10.4f} {row['ctcvr_ratio']:>8.3f} {row['ctcvr_expected_ratio']:>8.3f} "
            f"{f'[{low:.3f}, {high:.3f}]':>15} {row['cvr_auc']:>8.4f} "
            f"{row['epochs_run']:>6} {row['seconds']:>8.0f}",
            flush=True,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2, default=float))


if __name__ == "__main__":
    main()
