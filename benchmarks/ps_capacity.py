"""The largest embedding table this machine trains with two local parameter servers, against the
largest it trains in one process (issue 19).

    .venv/bin/python benchmarks/ps_capacity.py [--dim 64] [--start-gib 0.5] [--max-gib 16]
        [--steps 3] [--guard-gib 20] [--embedding-l2 0] [--optimizers adam adagrad]

The model is `mtrank train`'s (`training.trainer.build_model`: MMoE, two experts, Keras's legacy
optimizers, `--optimizers` each in turn: Adam is the trainer's default; Adagrad's sparse update is
one fused kernel on the rows a batch used, where Adam's updates every row of its moments) over
one hashed categorical `user_id` of `num_buckets` rows x `dim` (the table measured) and a
three-value vocabulary feature, tasks ctr and cvr (conditioned on click), batches of 1024 random
ids drawn by tf.data. Table sizes double from `--start-gib`; each attempt is a fresh set of
processes:

- `one_process`: the trainer's placement without TF_CONFIG (the default strategy on CPU);
- `parameter_servers`: a chief (`training.distribute`'s ParameterServerStrategy, the table split
  by rows into one shard per server), one worker and two parameter servers
  (`python -m training.parameter_servers`), all on loopback.

An attempt fits two epochs of `--steps` steps (the first traces and warms up; the second is
timed: its wall time / steps is `step_ms`) and succeeds if the chief finishes. It fails on an
error, on `--timeout`, or when the memory guard kills it: the attempt's processes together above
`--guard-gib` resident, or the machine's MemAvailable under 1 GiB. Each mode stops at its first
failure. Per attempt: the peak resident memory (VmHWM) of each process.

On one machine the parameter servers, the worker and the chief share the same RAM, so the
parameter-server column cannot be larger by design: what it shows is that the table is split
(`shards`), how much each server holds at its peak (the memory one machine per server would
need), and what the split costs per step. The point of parameter servers is several machines.

Writes benchmarks/results/ps_capacity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GIB = 1 << 30
BATCH = 1024


@dataclass
class Attempt:
    mode: str
    optimizer: str
    num_buckets: int
    dim: int
    table_gib: float
    ok: bool = False
    failure: str | None = None
    step_ms: float | None = None
    seconds: float = 0.0
    shards: list[str] = field(default_factory=list)
    peak_rss_gib: dict[str, float] = field(default_factory=dict)  # per process (VmHWM)
    # per process, resident at the last poll before the chief exited: after the timed steps
    final_rss_gib: dict[str, float] = field(default_factory=dict)
    peak_total_rss_gib: float = 0.0  # all the attempt's processes at one poll


# ---- one attempt, in the chief's process -------------------------------------------------------


def train_steps(
    num_buckets: int, dim: int, steps: int, embedding_l2: float, optimizer: str
) -> dict[str, Any]:
    """Builds the model (in the strategy of TF_CONFIG, or none), fits 2 epochs of `steps` steps,
    returns the second epoch's time per step and where the table's pieces are."""
    sys.path.insert(0, str(ROOT))
    from ranker.keras_compat import keras, tf
    from ranker.schema import Schema
    from training.config import TrainConfig
    from training.distribute import placement_from_environment
    from training.trainer import build_model

    schema = Schema.from_dict(
        {
            "features": [
                {
                    "name": "user_id",
                    "type": "categorical",
                    "entity": "user",
                    "num_buckets": num_buckets,
                    "embedding_dim": dim,
                },
                {
                    "name": "device",
                    "type": "categorical",
                    "entity": "context",
                    "vocabulary": ["ios", "android", "web"],
                },
            ],
            "tasks": [
                {"name": "ctr", "label": "click"},
                {"name": "cvr", "label": "conversion", "condition": "click"},
            ],
        }
    )
    config = TrainConfig.model_validate(
        {
            "batch_size": BATCH,
            "steps_per_execution": 1,
            "optimizer": {"name": optimizer},
            "hparams": {
                "num_experts": 2,
                "expert_units": [32],
                "tower_units": [16],
                "embedding_l2": embedding_l2,
            },
        }
    )
    placement = placement_from_environment()
    with placement.strategy.scope():
        model = build_model(schema, "mmoe", config, 1)
        # traced, as the trainer builds it: an eager call would copy the table into the chief
        tf.function(model)({"user_id": tf.constant(["0"]), "device": tf.constant(["ios"])})
    table = model.feature_inputs[0].embeddings[f"hashed_embeddings_{dim}d"].embeddings
    pieces = getattr(table, "variables", [table])

    def dataset_fn(context: Any = None) -> tf.data.Dataset:
        def batch(draws: tf.Tensor) -> Any:
            ids = tf.strings.as_string(draws % num_buckets)
            device = tf.gather(tf.constant(["ios", "android", "web"]), draws % 3)
            click = tf.cast(draws % 7 == 0, tf.float32)
            conversion = click * tf.cast(draws % 5 == 0, tf.float32)
            return {"user_id": ids, "device": device}, {"click": click, "conversion": conversion}

        draws = tf.data.Dataset.random(seed=None).batch(BATCH)
        return draws.map(lambda d: batch(tf.abs(d))).prefetch(2)

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.started)  # after every step ran

    clock = EpochClock()
    data = (
        keras.utils.experimental.DatasetCreator(dataset_fn)
        if placement.parameter_servers
        else dataset_fn()
    )
    model.fit(data, epochs=2, steps_per_epoch=steps, callbacks=[clock], verbose=0)
    return {
        "step_ms": 1000 * clock.seconds[-1] / steps,
        "shards": [f"{v.device} {v.shape.as_list()}" for v in pieces],
        "placement": placement.description,
    }


# ---- the driver: processes, memory guard -------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _status(pid: int, key: str) -> int:
    """A /proc/PID/status memory field in bytes (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_attempt(mode: str, optimizer: str, num_buckets: int, args: argparse.Namespace) -> Attempt:
    attempt = Attempt(mode, optimizer, num_buckets, args.dim, num_buckets * args.dim * 4 / GIB)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    env.pop("TF_CONFIG", None)
    child = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--attempt",
        str(num_buckets),
        "--dim",
        str(args.dim),
        "--steps",
        str(args.steps),
        "--embedding-l2",
        str(args.embedding_l2),
        "--optimizers",
        optimizer,
    ]
    processes: dict[str, subprocess.Popen[str]] = {}
    if mode == "parameter_servers":
        hosts = [f"127.0.0.1:{port}" for port in _free_ports(4)]
        cluster = {"chief": hosts[:1], "worker": hosts[1:2], "ps": hosts[2:]}
        for task, index in (("worker", 0), ("ps", 0), ("ps", 1)):
            tf_config = {"cluster": cluster, "task": {"type": task, "index": index}}
            processes[f"{task}{index}"] = subprocess.Popen(
                [sys.executable, "-m", "training.parameter_servers"],
                env={**env, "TF_CONFIG": json.dumps(tf_config)},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
    chief = subprocess.Popen(
        child, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    processes = {"chief": chief, **processes}
    started = time.perf_counter()
    peaks, final = dict.fromkeys(processes, 0), dict.fromkeys(processes, 0)
    try:
        while chief.poll() is None:
            total = 0
            for name, proc in processes.items():
                peaks[name] = max(peaks[name], _status(proc.pid, "VmHWM"))
                resident = _status(proc.pid, "VmRSS")
                final[name] = resident or final[name]
                total += resident
            attempt.peak_total_rss_gib = max(attempt.peak_total_rss_gib, total / GIB)
            if total > args.guard_gib * GIB:
                attempt.failure = f"memory guard: {total / GIB:.1f} GiB resident > {args.guard_gib}"
            elif _available() < GIB:
                attempt.failure = "memory guard: the machine has under 1 GiB available"
            elif time.perf_counter() - started > args.timeout:
                attempt.failure = f"timeout after {args.timeout} s"
            if attempt.failure:
                break
            time.sleep(0.2)
        for name, proc in processes.items():
            peaks[name] = max(peaks[name], _status(proc.pid, "VmHWM"))
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        out, err = chief.communicate()
        for proc in processes.values():
            proc.wait()
    attempt.seconds = round(time.perf_counter() - started, 1)
    attempt.peak_rss_gib = {name: round(peak / GIB, 2) for name, peak in peaks.items()}
    attempt.final_rss_gib = {name: round(rss / GIB, 2) for name, rss in final.items()}
    attempt.peak_total_rss_gib = round(attempt.peak_total_rss_gib, 2)
    if attempt.failure is None and chief.returncode != 0:
        # the exception's line of the traceback (Keras appends its call arguments after it)
        lines = [line.strip() for line in err.splitlines() if "Error" in line]
        why = lines[-1] if lines else err.strip()[-300:]
        attempt.failure = f"exit {chief.returncode}: {why[:300]}"
    if attempt.failure is None:
        report = json.loads(out.strip().splitlines()[-1])
        attempt.ok, attempt.step_ms = True, round(report["step_ms"], 1)
        attempt.shards = report["shards"]
    return attempt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--start-gib", type=float, default=0.5)
    parser.add_argument("--max-gib", type=float, default=16.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--guard-gib", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--embedding-l2", type=float, default=0.0)
    parser.add_argument("--modes", nargs="+", default=["one_process", "parameter_servers"])
    parser.add_argument("--optimizers", nargs="+", default=["adam", "adagrad"])
    parser.add_argument("--attempt", type=int, help=argparse.SUPPRESS)  # the chief of one attempt
    parser.add_argument("--out", type=Path, default=RESULTS / "ps_capacity.json")
    args = parser.parse_args()
    if args.attempt is not None:
        report = train_steps(
            args.attempt, args.dim, args.steps, args.embedding_l2, args.optimizers[0]
        )
        print(json.dumps(report))
        return

    attempts: list[Attempt] = []
    largest: dict[str, float | None] = {}
    for optimizer in args.optimizers:
        for mode in args.modes:
            series = f"{mode}, {optimizer}"
            largest[series] = None
            buckets = int(args.start_gib * GIB / (4 * args.dim))
            while buckets * args.dim * 4 <= args.max_gib * GIB:
                attempt = run_attempt(mode, optimizer, buckets, args)
                attempts.append(attempt)
                print(_row(attempt), flush=True)
                if not attempt.ok:
                    break
                largest[series] = attempt.table_gib
                buckets *= 2
    print()
    print(_table(attempts))
    for series, gib in largest.items():
        print(f"largest table, {series}: {'none' if gib is None else f'{gib:g} GiB'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "largest_table_gib": largest,
                "attempts": [asdict(a) for a in attempts],
                "setup": {
                    "dim": args.dim,
                    "batch": BATCH,
                    "steps_timed": args.steps,
                    "embedding_l2": args.embedding_l2,
                    "optimizers": args.optimizers,
                    "guard_gib": args.guard_gib,
                    "machine": platform.platform(),
                    "cores": os.cpu_count(),
                    "memory_gib": round(
                        os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB, 1
                    ),
                    "load_average": os.getloadavg(),
                    "when": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
                },
            },
            indent=2,
        )
    )


def _row(a: Attempt) -> str:
    result = f"{a.step_ms:9.1f} ms/step" if a.ok else f"FAILED ({a.failure})"
    table = f"{a.mode:18s} {a.optimizer:8s} {a.table_gib:6.2f} GiB"
    return f"{table}  {result}  RSS GiB peak (final): {_memory(a)}  ({a.seconds} s)"


def _table(attempts: list[Attempt]) -> str:
    lines = [
        "| mode | optimizer | table (buckets x dim) | GiB | result | ms/step | "
        "RSS GiB per process: peak (after the steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in attempts:
        result, step = ("ok", a.step_ms) if a.ok else (a.failure, "")
        table = f"{a.num_buckets:,} x {a.dim} | {a.table_gib:g}"
        lines.append(f"| {a.mode} | {a.optimizer} | {table} | {result} | {step} | {_memory(a)} |")
    return "\n".join(lines)


def _memory(a: Attempt) -> str:
    return ", ".join(
        f"{name} {peak:.1f} ({a.final_rss_gib.get(name, 0.0):.1f})"
        for name, peak in a.peak_rss_gib.items()
    )


if __name__ == "__main__":
    main()
