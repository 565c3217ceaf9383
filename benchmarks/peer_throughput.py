"""mtrank against DeepCTR 0.9.4, side by side: training examples/s and test AUC of the same models.

    .venv/bin/python benchmarks/peer_throughput.py                  # 100k wide rows, 3 epochs, 2 repeats
    .venv/bin/python benchmarks/peer_throughput.py --rows 20000 --epochs 2 --repeats 1 --no-quality
    .venv/bin/python benchmarks/peer_throughput.py --synth-rows 200000 --architectures mmoe

Data: `benchmarks/datasets.py wide` (census-like: 33 categorical + 7 numeric columns, tasks income
and married) of `--rows` rows, or `--data DIR`; with `--synth-rows N`, also an `mtrank synth` log of
N rows, where DeepCTR joins the user and item tables in itself and learns ctr = click and
ctcvr = click * conversion.

DeepCTR runs in its own venv (`--peer-venv`, created on first use with deepctr==0.9.4 on the same
TensorFlow and tf_keras; `TF_USE_LEGACY_KERAS=1`), through `benchmarks/peers/deepctr_run.py`, fed
from numpy arrays in memory as its users do (label-encoding fitted on the training split, unseen
values -> id 0). mtrank trains through `training.trainer.train` in the project venv, reading the
Parquet splits with its own reader. Each run is its own subprocess, so TensorFlow starts fresh; per
architecture and repeat the two sides alternate (DeepCTR first on even repeats), so machine drift
hits both.

1. Throughput, same model on both sides (`SHAPES`, in mtrank's hyperparameter names): embedding
   dim from the schema (8 on wide), numerics log1p'd where the schema says so and z-scored, batch
   1024, Adam 1e-3, no dropout, no L2, no crosses, `--epochs` epochs with validation on the val
   split each epoch. examples/s = training rows / seconds of an epoch's training steps (validation
   excluded), median over the epochs after the first (which includes tracing); the table shows the
   median over repeats, and test AUC per task (mean over repeats).
2. Quality at usual settings (`--quality`, the default): mtrank with `TrainConfig()` exactly (what
   `mtrank train --data --model --out` gets) against DeepCTR with its constructor defaults, batch
   1024, up to 10 epochs, EarlyStopping on val_loss (patience 2, best weights restored).

Prints markdown tables; writes everything, with the machine's description, to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from datasets import wide  # type: ignore[import-not-found]

from training.cli import main as mtrank_cli

ROOT = Path(__file__).resolve().parent
DEEPCTR_RUN = ROOT / "peers" / "deepctr_run.py"
PEER_PACKAGES = (
    "deepctr==0.9.4",
    "tensorflow~=2.21.0",
    "tf-keras~=2.21.0",
    "pyarrow",
    "pyyaml",
    "numpy",
)
BATCH_SIZE, LEARNING_RATE = 1024, 0.001
USUAL_EPOCHS = 10  # DeepCTR's usual run: up to 10 epochs, early stopping on val_loss

# The models both sides build, in mtrank's names (deepctr_run.py translates them). PLE: one level
# with 2 shared + 1 specific expert per task, so 4 expert networks of 64 units, as MMoE's 4.
SHAPES: dict[str, dict[str, Any]] = {
    "shared_bottom": {"bottom_units": [128, 64], "tower_units": [32]},
    "mmoe": {"num_experts": 4, "expert_units": [64], "tower_units": [32]},
    "ple": {
        "levels": 1,
        "shared_experts": 2,
        "specific_experts": 1,
        "expert_units": [64],
        "tower_units": [32],
    },
}
# mtrank's regularizers and crosses, off (DeepCTR's are turned off in deepctr_run.py)
MTRANK_PLAIN = {
    "dropout": 0.0,
    "embedding_l2": 0.0,
    "vocabulary_embedding_l2": 0.0,
    "cross_layers": 0,
}

Side = Literal["mtrank", "deepctr"]
Settings = Literal["matched", "usual"]


# ---- the mtrank side (runs in a subprocess: this file with --mtrank-job) --------------------


def mtrank_config(architecture: str, settings: Settings, epochs: int) -> dict[str, Any]:
    """The TrainConfig mapping: the matched model for throughput, or {} (TrainConfig() exactly)."""
    if settings == "usual":
        return {}
    return {
        "hparams": {**SHAPES[architecture], **MTRANK_PLAIN},
        "batch_size": BATCH_SIZE,
        "optimizer": {"name": "adam", "learning_rate": LEARNING_RATE},
        "epochs": epochs,
        "early_stopping": {"enabled": False},
    }


def mtrank_job(job: dict[str, Any]) -> dict[str, Any]:
    """Trains one model with `training.trainer.train`; what `deepctr_run.py` reports, for mtrank."""
    from ranker.keras_compat import keras, tf
    from training.config import TrainConfig
    from training.trainer import train

    data = Path(job["data"])
    config = TrainConfig.model_validate(job["config"])
    with tempfile.TemporaryDirectory(prefix="mtrank-peer-models-") as models:
        result = train(data, job["architecture"], models, config, verbose=False)
        metadata = json.loads((result.path / "metadata.json").read_text())
    rows = train_rows(data)
    rates = [rows / seconds for seconds in result.epoch_seconds[1:]]
    return {
        "side": "mtrank",
        "architecture": job["architecture"],
        "config": job["config"],
        "train_config": metadata.get("train_config"),  # as resolved (batch_size: auto -> a number)
        "train_rows": rows,
        "epochs_run": len(result.epoch_seconds),
        "epoch_seconds": result.epoch_seconds,
        "examples_per_s": statistics.median(rates) if rates else None,
        "trainable_parameters": parameters(result.model),
        "history": result.history,
        "test": result.test,
        "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__},
    }


def parameters(model: Any) -> int | None:
    if model is None:
        return None
    return int(sum(v.shape.num_elements() for v in model.trainable_variables))


# ---- running the two sides ------------------------------------------------------------------


def train_rows(data: Path) -> int:
    return int(pq.ParquetFile(data / "train.parquet").metadata.num_rows)


def peer_python(venv: Path) -> Path:
    """The peer venv's python, creating the venv with `PEER_PACKAGES` when it is missing."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {venv} with {' '.join(PEER_PACKAGES)} (takes minutes)", file=sys.stderr)
    base = shutil.which("python3.11") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)
    return python


def command(
    side: Side, peer: Path, data: Path, architecture: str, settings: Settings, epochs: int
) -> list[str]:
    if side == "mtrank":
        job = {
            "data": str(data),
            "architecture": architecture,
            "config": mtrank_config(architecture, settings, epochs),
        }
        return [sys.executable, __file__, "--mtrank-job", json.dumps(job)]
    args = [str(peer), str(DEEPCTR_RUN), "--data", str(data), "--architecture", architecture]
    args += ["--batch-size", str(BATCH_SIZE), "--learning-rate", str(LEARNING_RATE)]
    if settings == "usual":
        return [*args, "--usual", "--epochs", str(USUAL_EPOCHS)]
    return [*args, "--hparams", json.dumps(SHAPES[architecture]), "--epochs", str(epochs)]


def run_side(
    side: Side, peer: Path, data: Path, architecture: str, settings: Settings, epochs: int
) -> dict[str, Any]:
    """One subprocess; its last stdout line that is a JSON object, or {"error": ...}."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if side == "deepctr":
        env["TF_USE_LEGACY_KERAS"] = "1"
    started = time.perf_counter()
    done = subprocess.run(
        command(side, peer, data, architecture, settings, epochs),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT.parent,
    )
    seconds = time.perf_counter() - started
    if done.returncode == 0:
        for line in reversed(done.stdout.strip().splitlines()):
            if line.startswith("{"):
                return {**json.loads(line), "process_seconds": seconds}
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    print(f"{side} {architecture} ({settings}) failed:\n{tail}", file=sys.stderr)
    return {"side": side, "error": (tail.splitlines() or ["no output"])[-1]}


def order(repeat: int) -> tuple[Side, Side]:
    """DeepCTR first on even repeats, mtrank first on odd ones."""
    return ("deepctr", "mtrank") if repeat % 2 == 0 else ("mtrank", "deepctr")


def throughput(
    peer: Path, data: Path, architecture: str, epochs: int, repeats: int
) -> dict[Side, list[dict[str, Any]]]:
    runs: dict[Side, list[dict[str, Any]]] = {"mtrank": [], "deepctr": []}
    for repeat in range(repeats):
        for side in order(repeat):
            run = run_side(side, peer, data, architecture, "matched", epochs)
            runs[side].append(run)
            rate = run.get("examples_per_s")
            shown = f"{rate:,.0f} examples/s" if rate else run.get("error", "no rate")
            print(
                f"  {architecture} repeat {repeat + 1}/{repeats} {side}: {shown}", file=sys.stderr
            )
    return runs


def quality(peer: Path, data: Path, architecture: str) -> dict[Side, dict[str, Any]]:
    runs: dict[Side, dict[str, Any]] = {}
    for side in order(0):
        runs[side] = run_side(side, peer, data, architecture, "usual", USUAL_EPOCHS)
        outcome = runs[side].get("error", "done")
        print(f"  {architecture} usual settings {side}: {outcome}", file=sys.stderr)
    return runs


# ---- summaries and tables -------------------------------------------------------------------


def median_rate(runs: list[dict[str, Any]]) -> float | None:
    rates = [r["examples_per_s"] for r in runs if r.get("examples_per_s")]
    return statistics.median(rates) if rates else None


def mean_auc(runs: list[dict[str, Any]], task: str) -> float | None:
    values = [r["test"][task]["auc"] for r in runs if task in r.get("test", {})]
    return statistics.fmean(values) if values else None


def shared_tasks(runs: list[dict[str, Any]]) -> list[str]:
    """Tasks both sides report, in DeepCTR's order (synth: mtrank also has cvr)."""
    deepctr = next((r["test"] for r in runs if r["side"] == "deepctr" and "test" in r), {})
    mtrank = next((r["test"] for r in runs if r["side"] == "mtrank" and "test" in r), {})
    return [task for task in deepctr if task in mtrank]


def summarize(runs: dict[Side, list[dict[str, Any]]]) -> dict[str, Any]:
    mtrank, deepctr = median_rate(runs["mtrank"]), median_rate(runs["deepctr"])
    tasks = shared_tasks([*runs["mtrank"], *runs["deepctr"]])
    return {
        "mtrank_examples_per_s": mtrank,
        "deepctr_examples_per_s": deepctr,
        "ratio": mtrank / deepctr if mtrank and deepctr else None,
        "trainable_parameters": {
            side: next((r["trainable_parameters"] for r in side_runs if "error" not in r), None)
            for side, side_runs in runs.items()
        },
        "test_auc": {
            task: {
                "mtrank": mean_auc(runs["mtrank"], task),
                "deepctr": mean_auc(runs["deepctr"], task),
            }
            for task in tasks
        },
    }


def number(value: float | int | None, form: str) -> str:
    return "failed" if value is None else format(value, form)


def throughput_table(summaries: dict[str, dict[str, Any]]) -> str:
    tasks = next(iter(summaries.values()))["test_auc"].keys() if summaries else []
    header = ["architecture", "parameters mtrank / DeepCTR"]
    header += ["mtrank ex/s", "DeepCTR ex/s", "mtrank/DeepCTR"]
    header += [f"{task} AUC {side}" for task in tasks for side in ("mtrank", "DeepCTR")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for architecture, s in summaries.items():
        params = s["trainable_parameters"]
        cells = [
            architecture,
            f"{number(params['mtrank'], ',')} / {number(params['deepctr'], ',')}",
        ]
        cells.append(number(s["mtrank_examples_per_s"], ",.0f"))
        cells += [number(s["deepctr_examples_per_s"], ",.0f"), number(s["ratio"], ".2f")]
        for task in tasks:
            auc = s["test_auc"].get(task, {})
            cells += [number(auc.get("mtrank"), ".4f"), number(auc.get("deepctr"), ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quality_table(results: dict[str, dict[Side, dict[str, Any]]]) -> str:
    header = ["architecture", "task", "mtrank defaults AUC", "DeepCTR usual AUC", "difference"]
    header += ["mtrank batch / epochs", "DeepCTR epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for architecture, runs in results.items():
        mtrank, deepctr = runs["mtrank"], runs["deepctr"]
        batch = (mtrank.get("train_config") or {}).get("batch_size", "?")
        for task in shared_tasks(list(runs.values())):
            a, b = mtrank["test"][task]["auc"], deepctr["test"][task]["auc"]
            cells = [architecture, task, f"{a:.4f}", f"{b:.4f}", f"{a - b:+.4f}"]
            cells += [f"{batch} / {mtrank['epochs_run']}", str(deepctr["epochs_run"])]
            lines.append("| " + " | ".join(cells) + " |")
        if not shared_tasks(list(runs.values())):
            errors = "; ".join(r["error"] for r in runs.values() if "error" in r)
            lines.append(f"| {architecture} | failed: {errors} |")
    return "\n".join(lines)


# ---- machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT.parent
        ).stdout.strip()

    return git("rev-parse", "HEAD") + (" (dirty)" if git("status", "--porcelain") else "")


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "mtrank_commit": git_commit(),
        "load_average_1_5_15_min": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
    }


def versions(runs: list[dict[str, Any]], side: Side) -> dict[str, str]:
    return next((r["versions"] for r in runs if r["side"] == side and "versions" in r), {})


# ---- main -----------------------------------------------------------------------------------


@contextmanager
def datasets(args: argparse.Namespace) -> Iterator[dict[str, Path]]:
    """{"wide": DIR, "synth": DIR (with --synth-rows)}: --data, or made in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="mtrank-peer-data-") as tmp:
        dirs = {"wide": args.data or wide(Path(tmp) / "wide", args.rows, args.seed)}
        if args.synth_rows:
            synth = Path(tmp) / "synth"
            flags = ["--out", str(synth), "--rows", str(args.synth_rows), "--seed", str(args.seed)]
            with redirect_stdout(sys.stderr):  # its summary line is not one of the tables
                mtrank_cli(["synth", *flags])
            dirs["synth"] = synth
        yield dirs


def warn_if_unmatched(runs: list[dict[str, Any]]) -> None:
    """DeepCTR computes the loss alone on training batches: say so if mtrank computed metrics too."""
    for run in runs:
        if run["side"] == "mtrank" and (run.get("train_config") or {}).get("train_metrics"):
            print(
                "warning: mtrank computed metrics on training batches (train_metrics: true), "
                "DeepCTR the loss alone: the throughputs are not of the same work",
                file=sys.stderr,
            )
            return


def compare(
    args: argparse.Namespace, peer: Path, name: str, data: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Throughput (and quality) of every architecture on one dataset; (report, every run)."""
    print(f"{name}: {train_rows(data):,} training rows ({data})", file=sys.stderr)
    runs: list[dict[str, Any]] = []
    report: dict[str, Any] = {"train_rows": train_rows(data), "throughput": {}, "quality": {}}
    summaries = {}
    for architecture in args.architectures.split(","):
        sides = throughput(peer, data, architecture, args.epochs, args.repeats)
        summaries[architecture] = summarize(sides)
        report["throughput"][architecture] = {**summaries[architecture], "runs": sides}
        runs += [*sides["mtrank"], *sides["deepctr"]]
    warn_if_unmatched(runs)
    print(f"\n## {name}: throughput, same model (batch {BATCH_SIZE}, {args.epochs} epochs)\n")
    print(throughput_table(summaries))
    if args.quality:
        for architecture in args.architectures.split(","):
            report["quality"][architecture] = quality(peer, data, architecture)
            runs += list(report["quality"][architecture].values())
        print(f"\n## {name}: quality, mtrank defaults vs DeepCTR usual settings\n")
        print(quality_table(report["quality"]))
    return report, runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="a `datasets.py wide` directory (default: new)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the new wide table")
    parser.add_argument("--synth-rows", type=int, default=0, help="also an mtrank synth log")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architectures", default=",".join(SHAPES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peer-venv", type=Path, default=ROOT / ".venvs" / "deepctr")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "peer_throughput.json")
    parser.add_argument("--mtrank-job", help=argparse.SUPPRESS)  # the mtrank side's subprocess
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # tables and stderr progress interleave in order
    if args.mtrank_job:
        print(json.dumps(mtrank_job(json.loads(args.mtrank_job))))
        return
    unknown = sorted(set(args.architectures.split(",")) - set(SHAPES))
    if unknown:
        parser.error(f"--architectures: no shapes for {unknown}; known: {sorted(SHAPES)}")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch includes tracing and is not timed)")

    load_start = os.getloadavg()
    started = time.monotonic()
    peer = peer_python(args.peer_venv)
    results: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    with datasets(args) as dirs:
        for name, data in dirs.items():
            results[name], found = compare(args, peer, name, data)
            runs += found
    report = {
        "setup": {
            "shapes": SHAPES,
            "mtrank_plain_hparams": MTRANK_PLAIN,
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "usual_max_epochs": USUAL_EPOCHS,
            "wide_rows": None if args.data else args.rows,
            "synth_rows": args.synth_rows,
            "deepctr_encoding": "label ids fitted on the training split, unseen values -> 0",
            "seconds": round(time.monotonic() - started, 1),
            "machine": machine(load_start),
            "versions": {"mtrank": versions(runs, "mtrank"), "deepctr": versions(runs, "deepctr")},
        },
        "datasets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
