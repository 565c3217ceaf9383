"""Calibration inside the export, measured on the synthetic click log's test split.

Trains MMoE (its defaults) twice on one `mtrank synth` log and scores the test split with each
export's raw and served scores:

* `full` train.parquet: the raw scores against the export's isotonic calibration (fitted on
  val), and against Platt and temperature scaling fitted on the same model's val scores (the
  calibrators `calibration.method: platt | temperature` would export: the weights do not depend on
  the method, so the model is not trained again);
* `sampled` train.parquet keeping 10% of the click = 0 rows (val and test untouched), trained with
  `negative_sampling_rate: 0.1`: the raw (biased) scores, the corrected scores only
  (q / (q + (1 - q) / 0.1), no calibrator), and the export's corrected + isotonic scores.

Per output: ECE (10 equal-frequency bins), calibration ratio (mean score / observed rate) and AUC;
ctr and ctcvr on every test row, cvr on the clicked rows. The `oracle` row scores the generator's
true probabilities: the ECE a perfect model gets from the finite test split alone.

    python benchmarks/calibration.py                     # 200k rows, seed 0
    python benchmarks/calibration.py --rows 100000 --epochs 5
    python benchmarks/calibration.py --other wide,regression --other-rows 50000

`--other` also trains on datasets synth did not make (`benchmarks/datasets.py`): `wide` (two
binary tasks, no condition, no product) and `regression` (regression tasks only: nothing is
calibrated, the export serves the model's scores). Prints a table and writes JSON to --out.
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
import numpy as np
import pyarrow.parquet as pq
import synthetic

import ranker  # noqa: F401  (Keras 2 before TensorFlow loads)
from ranker.contract import ExportMetadata
from ranker.schema import Schema
from training import calibration, metrics
from training.config import TrainConfig
from training.data import ReadOptions, make_dataset, read_columns
from training.evaluation import saved_model_scorer, score_dataset
from training.negative_sampling import correct_negative_sampling
from training.trainer import train

RESULTS = Path(__file__).parent / "results"
SAMPLING_RATE = 0.1
SHOWN = ("ece", "calibration", "auc")


def scores_of(export: Path, data: Path, split: str, schema: Schema) -> tuple[dict, dict]:
    """The export's served and raw (`raw_<name>`) scores of a split, and its labels."""
    dataset = make_dataset(data / f"{split}.parquet", schema, ReadOptions(batch_size=8192))
    return score_dataset(saved_model_scorer(export, raw=True), dataset)


def raw_of(scores: dict[str, np.ndarray], schema: Schema) -> dict[str, np.ndarray]:
    return {name: scores[f"raw_{name}"] for name in schema.output_names}


def figures(schema: Schema, scores: dict[str, np.ndarray], labels: dict) -> dict[str, Any]:
    """Per output: ece, calibration, auc (and logloss) of `scores` keyed by output name."""
    results = metrics.evaluate(schema, scores, labels)
    return {
        name: {key: round(float(values[key]), 5) for key in (*SHOWN, "logloss")}
        for name, values in results.items()
        if "auc" in values
    }


def refit(
    schema: Schema, method: str, val: dict, val_labels: dict, test: dict
) -> dict[str, np.ndarray]:
    """The test scores an export with calibrators of `method` (fitted on `val`) would serve."""
    config = TrainConfig.model_validate({"calibration": {"method": method}})
    fitted = calibration.fit(schema, config, val, val_labels)
    return {k: v.numpy() for k, v in calibration.export_outputs(fitted, schema, test).items()}


def sampled_copy(data: Path, out: Path, rate: float, seed: int) -> Path:
    """`data` with train.parquet keeping each click = 0 row with probability `rate`."""
    out.mkdir(parents=True)
    for path in data.iterdir():
        if path.name != "train.parquet":
            (out / path.name).symlink_to(path.resolve())
    table = pq.read_table(data / "train.parquet")
    rng = np.random.default_rng(seed)
    keep = (table.column("click").to_numpy() == 1) | (rng.random(table.num_rows) < rate)
    pq.write_table(table.filter(keep), out / "train.parquet")
    return out


def click_log(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data = synthetic.data_dir(args)
    schema = Schema.load(data / "schema.yaml")
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    runs: dict[str, Any] = {}
    rows: dict[str, Any] = {}

    truth = read_columns(data / "test.parquet", ["p_click", "p_conversion"])
    started = time.perf_counter()
    full = train(data, "mmoe", root / "full", TrainConfig.model_validate(overrides), verbose=False)
    runs["full"] = {"seconds": round(time.perf_counter() - started, 1), "path": str(full.path)}
    val, val_labels = scores_of(full.path, data, "val", schema)
    test, labels = scores_of(full.path, data, "test", schema)
    oracle = {"ctr": truth["p_click"], "cvr": truth["p_conversion"]}
    oracle["ctcvr"] = oracle["ctr"] * oracle["cvr"]
    rows["oracle (true p)"] = figures(schema, oracle, labels)
    rows["full: raw"] = figures(schema, raw_of(test, schema), labels)
    rows["full: isotonic (export)"] = figures(schema, test, labels)
    for method in ("platt", "temperature"):
        served = refit(schema, method, raw_of(val, schema), val_labels, raw_of(test, schema))
        rows[f"full: {method}"] = figures(schema, served, labels)

    sampled_dir = sampled_copy(data, root / "sampled_data", SAMPLING_RATE, args.seed)
    config = TrainConfig.model_validate({**overrides, "negative_sampling_rate": SAMPLING_RATE})
    started = time.perf_counter()
    sampled = train(sampled_dir, "mmoe", root / "sampled", config, verbose=False)
    runs["sampled"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "train_rows": pq.ParquetFile(sampled_dir / "train.parquet").metadata.num_rows,
        "path": str(sampled.path),
    }
    test, labels = scores_of(sampled.path, data, "test", schema)
    raw = raw_of(test, schema)
    corrected = {**raw, "ctr": correct_negative_sampling(raw["ctr"], SAMPLING_RATE)}
    corrected["ctcvr"] = corrected["ctr"] * corrected["cvr"]
    rows["sampled 10%: raw"] = figures(schema, raw, labels)
    rows["sampled 10%: corrected"] = figures(schema, corrected, labels)
    rows["sampled 10%: corrected + isotonic (export)"] = figures(schema, test, labels)
    runs["full"]["knots"], runs["sampled"]["knots"] = knots(full.path), knots(sampled.path)
    return {"train_rows": count(data), "runs": runs, "test": rows}


def knots(export: Path) -> dict[str, int]:
    """Per calibrated task of an export, its isotonic knots (metadata.json)."""
    fitted = ExportMetadata.read(export).calibration
    tasks = fitted.tasks.items() if fitted is not None else []
    return {task: entry.knots for task, entry in tasks if entry.knots}


def count(data: Path) -> dict[str, int]:
    return {
        split: pq.ParquetFile(data / f"{split}.parquet").metadata.num_rows
        for split in ("train", "val", "test")
    }


def other(name: str, rows: int, seed: int, root: Path, epochs: int | None) -> dict[str, Any]:
    """Train on `wide` or `regression` and compare the export's served scores with its raw ones."""
    if name == "wide":
        data = datasets.wide(root / name, rows, seed)
    else:
        data = datasets.regression(root / name, rows, seed, correlation=0.5)
    schema = Schema.load(data / "schema.yaml")
    overrides = {} if epochs is None else {"epochs": epochs}
    config = TrainConfig.model_validate(overrides)
    result = train(data, "mmoe", root / f"{name}_models", config, verbose=False)
    test, labels = scores_of(result.path, data, "test", schema)
    fitted = ExportMetadata.read(result.path).calibration
    summary: dict[str, Any] = {
        "calibrated": sorted(fitted.tasks) if fitted else [],
        "served equals raw": {
            output: bool(np.array_equal(test[output], test[f"raw_{output}"]))
            for output in schema.output_names
        },
    }
    if any(task.type == "binary" for task in schema.tasks):
        summary["test"] = {
            "raw": figures(schema, raw_of(test, schema), labels),
            "isotonic (export)": figures(schema, test, labels),
        }
    else:
        summary["test_rmse"] = {k: round(v["rmse"], 4) for k, v in result.test.items()}
    return summary


def print_table(rows: dict[str, Any]) -> None:
    outputs = list(next(iter(rows.values())))
    header = " | ".join(f"{o} {m}" for o in outputs for m in ("ECE", "ratio", "AUC"))
    print(f"| scores | {header} |")
    print("|---" * (1 + 3 * len(outputs)) + "|")
    for name, values in rows.items():
        cells = " | ".join(
            f"{values[o]['ece']:.4f} | {values[o]['calibration']:.3f} | {values[o]['auc']:.4f}"
            for o in outputs
        )
        print(f"| {name} | {cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    synthetic.add_arguments(parser)
    parser.set_defaults(rows=200_000)
    parser.add_argument("--epochs", type=int, help="the most epochs (default: the config's, 20)")
    parser.add_argument("--other", default="", help="also: wide,regression")
    parser.add_argument("--other-rows", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mtrank-calibration-"))
    started = time.perf_counter()
    document: dict[str, Any] = {
        "rows": args.rows if args.data is None else None,
        "seed": args.seed,
        "epochs": args.epochs,
        "machine": platform.platform(),
        "click_log": click_log(args, root),
    }
    print_table(document["click_log"]["test"])
    for name in filter(None, args.other.split(",")):
        document.setdefault("other", {})[name] = other(
            name, args.other_rows, args.seed, root, args.epochs
        )
        print(name, json.dumps(document["other"][name]), flush=True)
    document["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
