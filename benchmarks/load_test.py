"""Bounded load on loopback while a new model version lands and Redis is killed and restarted.

    .venv/bin/python benchmarks/load_test.py [--workdir mtrank-quickstart] [--seconds 60]

One `mtrank serve` process (polling for versions every second) over a private copy of the
quickstart models and a private redis-server; 8 client threads send /v1/rank (100 candidates)
back to back, at most `--max-requests` in all. On a timeline: at 25% a new version is dropped
into the models folder (renamed into place, as `mtrank train` does); at 50% redis-server is
killed; at 70% it is started again and re-materialized. The requirement: zero 5xx (and zero
failed connections). Reports latency and outcomes per phase; writes
benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from redis_server import RedisServer  # type: ignore[import-not-found]
from serve_latency import (  # type: ignore[import-not-found]
    RESULTS,
    Client,
    ensure_quickstart,
    mtrank,
    percentiles,
    rank_request,
    request_bodies,
    server,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path(__file__).parents[1] / "mtrank-quickstart"
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    source_models, data = ensure_quickstart(args.workdir)

    scratch = Path(tempfile.mkdtemp(prefix="mtrank-load-"))
    models = scratch / "models"
    shutil.copytree(source_models / "mmoe", models / "mmoe")
    redis = RedisServer()
    redis.start()
    events: list[tuple[float, str]] = []
    records: list[tuple[float, int, float, str | None, bool | None]] = []
    lock = threading.Lock()
    try:
        mtrank("features", "materialize", "--data", data, "--redis", redis.url)
        with server(models, ["--redis", redis.url, "--poll-interval", "1"]) as port:
            requests = [rank_request(body) for body in request_bodies(data, args.candidates, 2000)]
            warm = Client(port)
            for request in requests[:30]:
                warm.post(request)
            stop = threading.Event()
            started = time.perf_counter()

            def work(index: int) -> None:
                client = Client(port)
                i = index
                while not stop.is_set():
                    with lock:
                        if len(records) >= args.max_requests:
                            return
                    t0 = time.perf_counter()
                    status, payload = client.post(requests[i % len(requests)])
                    t1 = time.perf_counter()
                    i += args.clients
                    answer = json.loads(payload) if status == 200 else None  # after the clock
                    version = answer["version"] if answer else None
                    degraded = answer["degraded"] if answer else None
                    with lock:
                        records.append((t0 - started, status, t1 - t0, version, degraded))

            threads = [threading.Thread(target=work, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()

            def at(fraction: float, what: str) -> None:
                delay = started + fraction * args.seconds - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                events.append((round(time.perf_counter() - started, 2), what))
                print(f"{events[-1][0]:6.1f} s  {what}", file=sys.stderr, flush=True)

            latest = max(int(p.name) for p in (models / "mmoe").iterdir() if p.name.isdigit())
            at(0.25, f"drop version {latest + 1} into the models folder")
            staging = models / "mmoe" / ".staging"
            shutil.copytree(models / "mmoe" / str(latest), staging)
            staging.rename(models / "mmoe" / str(latest + 1))
            at(0.50, "kill redis-server")
            redis.kill()
            at(0.70, "restart redis-server and materialize")
            redis.start()
            mtrank("features", "materialize", "--data", data, "--redis", redis.url)
            events.append((round(time.perf_counter() - started, 2), "materialized again"))
            at(1.0, "stop")
            stop.set()
            for thread in threads:
                thread.join()
    finally:
        redis.kill()
        shutil.rmtree(scratch, ignore_errors=True)

    report = summarize(records, events, args)
    args.out.write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"wrote {args.out}")
    return 0 if report["total"]["5xx"] == 0 and report["total"]["failed"] == 0 else 1


def summarize(
    records: list[tuple[float, int, float, str | None, bool | None]],
    events: list[tuple[float, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    times = {what.split()[0]: t for t, what in events}
    bounds = [
        ("before", 0.0, times["drop"]),
        ("new version landing (5 s)", times["drop"], times["drop"] + 5),
        ("after swap, redis up", times["drop"] + 5, times["kill"]),
        ("redis down", times["kill"], times["restart"]),
        ("redis back", times["restart"], float("inf")),
    ]
    phases = []
    for name, lo, hi in bounds:
        chosen = [r for r in records if lo <= r[0] < hi]
        phases.append({"phase": name, "from_s": round(lo, 1), **_stats(chosen)})
    return {
        "benchmark": "load_test",
        "clients": args.clients,
        "candidates": args.candidates,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "events": events,
        "phases": phases,
        "total": _stats(records),
    }


def _stats(chosen: list[tuple[float, int, float, str | None, bool | None]]) -> dict[str, Any]:
    if not chosen:
        return {"requests": 0, "5xx": 0, "failed": 0}
    span = max(r[0] for r in chosen) - min(r[0] for r in chosen) or 1.0
    return {
        "requests": len(chosen),
        "rps": round(len(chosen) / span, 1),
        **percentiles([r[2] for r in chosen]),
        "5xx": sum(500 <= r[1] < 600 for r in chosen),
        "failed": sum(r[1] == 0 for r in chosen),
        "other_non_200": sum(r[1] not in (0, 200) and not 500 <= r[1] < 600 for r in chosen),
        "degraded": sum(bool(r[4]) for r in chosen),
        "versions": sorted({r[3] for r in chosen if r[3] is not None}),
    }


def print_report(report: dict[str, Any]) -> None:
    columns = ["phase", "requests", "rps", "p50_ms", "p99_ms", "max_ms", "5xx", "failed",
               "degraded", "versions"]  # fmt: skip
    widths = [26, 8, 7, 7, 7, 8, 4, 6, 8, 9]
    print(" ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in [*report["phases"], {"phase": "total", **report["total"]}]:
        print(" ".join(str(row.get(c, "")).rjust(w) for c, w in zip(columns, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
