"""`mtrank quickstart [--workdir DIR] [--check]`: the whole system on one machine, end to end.

Steps (each skipped when its output is already in the workdir, so a second run starts at once):

1. `mtrank synth`   -> DIR/data (click/conversion logs, users, items, schema.yaml)
2. `mtrank train`   -> DIR/models/mmoe/1 and DIR/models/ple/1 (small networks, a few epochs)
3. `mtrank features materialize` -> the embedded online store under DIR/data
4. `mtrank serve --models DIR/models --store DIR/data` on http://127.0.0.1:8000, in the
   foreground (Ctrl-C stops it), with a ready-to-paste `curl` printed once it is ready.

`--check` does all of it, scores one request over real HTTP, prints the response, stops the
server and exits 0 (1 if the answer is not a full, non-degraded ranking). Each step runs as its
own `mtrank` process, exactly as a user would type it; the embedded store is always the one
used (REDIS_URL is ignored here), so the quickstart never writes into someone's Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ranker.errors import MtrankError

ARCHITECTURES = {
    "mmoe": "hparams: {num_experts: 3, expert_units: [32], tower_units: [16]}\n",
    "ple": (
        "hparams: {levels: 2, specific_experts: 1, shared_experts: 1, expert_units: [32], "
        "tower_units: [16]}\n"
    ),
}
DATA_FILES = ("schema.yaml", "train.parquet", "val.parquet", "test.parquet", "users.parquet")
READY_TIMEOUT_S = 180.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("mtrank-quickstart"),
        help="where data, models and the store go (default ./mtrank-quickstart)",
    )
    parser.add_argument(
        "--check", action="store_true", help="score one request over HTTP, stop, exit 0"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port (default 8000; with --check a free port unless given)"
    )
    parser.add_argument("--rows", type=int, default=100_000, help="impressions to synthesize")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per model")


def run(args: argparse.Namespace) -> int:
    if args.rows < 1000:
        raise MtrankError(f"--rows must be >= 1000, got {args.rows}")
    if args.epochs < 1:
        raise MtrankError(f"--epochs must be >= 1, got {args.epochs}")
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data, models = workdir / "data", workdir / "models"
    steps = 3 + len(ARCHITECTURES)
    step = _Steps(steps)

    if all((data / name).exists() for name in (*DATA_FILES, "items.parquet")):
        step.skip("synthesize click/conversion logs", data)
    else:
        with step.run("synthesize click/conversion logs", data):
            _mtrank("synth", "--out", data, "--rows", args.rows, "--users", 2000, "--items", 500)

    for name, hparams in ARCHITECTURES.items():
        if _has_export(models / name):
            step.skip(f"train {name}", models / name)
            continue
        config = workdir / f"{name}.yaml"
        config.write_text(hparams)
        with step.run(f"train {name} ({args.epochs} epochs)", models / name):
            _mtrank(
                "train", "--data", data, "--model", name, "--out", models,
                "--epochs", args.epochs, "--batch-size", 2048, "--config", config, "--quiet",
            )  # fmt: skip

    store = data / "online_store" / "dump.rdb"
    if store.exists():
        step.skip("materialize users and items into the embedded store", store.parent)
    else:
        with step.run("materialize users and items into the embedded store", store.parent):
            _mtrank("features", "materialize", "--data", data)

    port = args.port if args.port is not None else (_free_port() if args.check else 8000)
    base = f"http://{args.host}:{port}"
    example = _example_request(data)
    step.announce(f"serve {models} on {base}")
    log = workdir / "serve.log"  # --check keeps the server's JSON logs out of its output
    with open(log, "w") if args.check else open(os.devnull) as log_file:
        server = subprocess.Popen(
            [*_mtrank_command(), "serve", "--models", str(models), "--store", str(data),
             "--host", args.host, "--port", str(port)],
            env=_env(),
            stderr=log_file if args.check else None,
            text=True,
        )  # fmt: skip
    try:
        _wait_ready(server, base, log if args.check else None)
        if args.check:
            return _check(base, example)
        print(_curl(base, example), flush=True)
        print(f"serving on {base} (docs: {base}/docs); Ctrl-C stops it", file=sys.stderr)
        return _wait(server)
    finally:
        _stop(server)


CHECK_ATTEMPTS = 5


def _check(base: str, example: dict[str, Any]) -> int:
    """Scores the example over HTTP; a complete, non-degraded answer within a few tries passes.

    A degraded answer is retried (a store read may miss its 50 ms budget on a busy machine while
    the service is still cold); an HTTP error or an incomplete answer fails at once.
    """
    import httpx

    for attempt in range(1, CHECK_ATTEMPTS + 1):
        response = httpx.post(f"{base}/v1/rank", json=example, timeout=30)
        if response.status_code != 200:
            print(response.text)
            print(f"quickstart check: HTTP {response.status_code}", file=sys.stderr)
            return 1
        body = response.json()
        if (body["missing"]["user"] and not body["degraded"]) or len(body["scores"]) != len(
            example["item_ids"]
        ):
            print(json.dumps(body, indent=2))
            print("quickstart check: the answer is incomplete", file=sys.stderr)
            return 1
        if not body["degraded"]:
            print(json.dumps(body, indent=2))
            print(
                f"quickstart check: ok ({body['model']} version {body['version']})", file=sys.stderr
            )
            return 0
        print(f"quickstart check: attempt {attempt} answered degraded, retrying", file=sys.stderr)
        time.sleep(0.5)
    print(json.dumps(body, indent=2))
    print(f"quickstart check: still degraded after {CHECK_ATTEMPTS} tries", file=sys.stderr)
    return 1


# ---- steps ------------------------------------------------------------------------------------


class _Steps:
    """Numbered progress lines on stderr: `[2/6] train mmoe -> DIR ... 41.0 s`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def skip(self, what: str, where: Path) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {what}: {where} exists, skipped", file=sys.stderr)

    def announce(self, what: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {what}", file=sys.stderr, flush=True)

    def run(self, what: str, where: Path) -> _Timed:
        self.done += 1
        return _Timed(f"[{self.done}/{self.total}] {what} -> {where}")


class _Timed:
    def __init__(self, line: str) -> None:
        self.line = line
        self.started = 0.0

    def __enter__(self) -> None:
        print(f"{self.line} ...", file=sys.stderr, flush=True)
        self.started = time.perf_counter()

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            print(f"    done in {time.perf_counter() - self.started:.1f} s", file=sys.stderr)


def _has_export(model_dir: Path) -> bool:
    return model_dir.is_dir() and any(
        p.name.isdigit() and (p / "saved_model.pb").exists() and (p / "metadata.json").exists()
        for p in model_dir.iterdir()
    )


def _mtrank_command() -> list[str]:
    return [sys.executable, "-m", "training.cli"]


def _env() -> dict[str, str]:
    """This environment without REDIS_URL/MTRANK_REDIS_URL: the quickstart's store is embedded."""
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MTRANK_REDIS_URL")}


def _mtrank(*args: object) -> None:
    done = subprocess.run(
        [*_mtrank_command(), *map(str, args)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise MtrankError(f"`mtrank {args[0]}` failed (exit {done.returncode}): {tail[0]}")


def _example_request(data: Path) -> dict[str, Any]:
    """A request for the first user and five items of the synthetic data."""
    import pyarrow.parquet as pq

    users = pq.read_table(data / "users.parquet", columns=["user_id"]).column(0)
    items = pq.read_table(data / "items.parquet", columns=["item_id"]).column(0)
    return {
        "user_id": str(users[0].as_py()),
        "item_ids": [str(items[i].as_py()) for i in range(min(5, len(items)))],
        "context": {"device": "ios", "hour": "20"},
    }


def _curl(base: str, example: dict[str, Any]) -> str:
    return (
        f"curl -s -X POST {base}/v1/rank -H 'Content-Type: application/json' "
        f"-d '{json.dumps(example)}'"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(server: subprocess.Popen[str], base: str, log: Path | None) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.poll() is not None:
            where = f" (its log: {log})" if log is not None else ""
            raise MtrankError(
                f"the server exited with code {server.returncode} before it was ready{where}; "
                "is the port in use? (--port)"
            )
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise MtrankError(f"the server at {base} was not ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.25)


def _wait(server: subprocess.Popen[str]) -> int:
    try:
        return server.wait()
    except KeyboardInterrupt:  # the server got the same Ctrl-C and shuts down by itself
        server.wait(timeout=30)
        return 0


def _stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
