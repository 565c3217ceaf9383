"""`mtrank serve --workers N` (serving/workers.py): N processes answer one port.

Against real servers (two worker processes each): both workers answer, /metrics of either one
counts every request of both, each worker writes its own exposure file and a clean stop leaves
every exposure in exactly one of them, a new model version is picked up by every worker's own
poll, and a worker killed with SIGKILL is replaced under its number without losing the counts.
Without a server: the settings reach a child intact and sized per worker, worker numbers are the
lowest free slots, dead processes' live gauges are forgotten, bad flags are one-line errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.settings import Settings
from serving.workers import (
    ServeRun,
    Worker,
    environment,
    forget_dead_processes,
    settings_environment,
    worker_environment,
    worker_file,
    worker_settings,
)
from tests.serving.conftest import cli, served

ITEMS = ["i1", "i2", "i3", "i4", "i5"]


# ---- without a server --------------------------------------------------------------------------


def test_each_worker_gets_its_share_of_the_cores(tmp_path: Path) -> None:
    two = worker_settings(Settings(models_dir=tmp_path, workers=2), cores=2)
    assert (two.tf_threads, two.model_threads) == (1, 2)  # 2 // 2; ceil(4 / 2)
    three = worker_settings(Settings(models_dir=tmp_path, workers=3), cores=8)
    assert (three.tf_threads, three.model_threads) == (2, 2)  # 8 // 3; ceil(4 / 3)
    crowded = worker_settings(Settings(models_dir=tmp_path, workers=4), cores=2)
    assert (crowded.tf_threads, crowded.model_threads) == (1, 1)  # at least one of each
    given = worker_settings(
        Settings(models_dir=tmp_path, workers=2, tf_threads=3, model_threads=4), cores=2
    )
    assert (given.tf_threads, given.model_threads) == (3, 4)  # kept, even the default's value


def test_settings_reach_a_child_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTRANK_REDIS_URL", "redis://elsewhere:6379/0")  # a flag's --store beat it
    given = Settings(
        models_dir=tmp_path / "models",
        store_dir=tmp_path / "data",
        redis_url=None,
        api_key="s3cret",
        exposure_log=tmp_path / "exp.jsonl",
        exposure_log_max_mb=0.5,
        log_features=True,
        store_timeout_s=0.025,
        access_log=False,
        workers=2,
        tf_threads=1,
    )
    with environment(settings_environment(given)):
        child = Settings()  # type: ignore[call-arg]
    assert child.redis_url is None and child.store_dir == tmp_path / "data"
    assert child.api_key is not None and child.api_key.get_secret_value() == "s3cret"
    assert child.model_dump(exclude={"api_key"}) == given.model_dump(exclude={"api_key"})
    assert os.environ["MTRANK_REDIS_URL"] == "redis://elsewhere:6379/0"  # restored after


def test_children_accept_one_connection_at_a_time_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    each, run = Settings(models_dir=tmp_path, workers=2), ServeRun(tmp_path)
    monkeypatch.delenv("UV_TCP_SINGLE_ACCEPT", raising=False)
    children = worker_environment(each, run, "info")
    assert children["UV_TCP_SINGLE_ACCEPT"] == "1"  # libuv: yield after each accept
    assert children["PROMETHEUS_MULTIPROC_DIR"] == str(run.metrics_dir)
    monkeypatch.setenv("UV_TCP_SINGLE_ACCEPT", "0")
    assert worker_environment(each, run, "info")["UV_TCP_SINGLE_ACCEPT"] == "0"


def test_worker_numbers_are_the_lowest_free_slots(tmp_path: Path) -> None:
    run = ServeRun(tmp_path)
    run.metrics_dir.mkdir()
    run.slots_dir.mkdir()
    first, second = Worker.claim(run), Worker.claim(run)
    assert (first.index, second.index) == (0, 1)
    assert second.exposure_log(tmp_path / "exp.jsonl") == tmp_path / "exp.jsonl.w1"
    first.close()  # its lock is free again: the next worker is number 0
    third = Worker.claim(run)
    assert third.index == 0
    third.startup_failed(RuntimeError("first"))  # type: ignore[arg-type]
    second.startup_failed(RuntimeError("second"))  # type: ignore[arg-type]
    assert run.startup_error() == "first"
    second.close()
    third.close()


def test_dead_processes_live_gauges_are_forgotten(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that has exited and been reaped
    alive = os.getpid()
    names = [
        f"gauge_livemax_{dead.pid}.db",  # a dead worker's live gauge: goes
        f"gauge_livemax_{alive}.db",  # a running process's: stays
        f"counter_{dead.pid}.db",  # a dead worker's counts: stay (totals never go down)
        f"gauge_max_{dead.pid}.db",  # not a live mode: stays
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert forget_dead_processes(tmp_path) == [dead.pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_bad_worker_counts_are_one_line_errors(export: Any) -> None:
    done = cli("serve", "--models", export.models, "--workers", "0", timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("mtrank serve: error: workers:"), done.stderr


# ---- two workers on one port -------------------------------------------------------------------


def test_two_workers_share_the_port_the_metrics_and_log_apart(
    models_dir: Path, embedded_data: Path, tmp_path: Path
) -> None:
    log = tmp_path / "exposures.jsonl"
    files = [worker_file(log, 0), worker_file(log, 1)]
    flags = ("--store", embedded_data, "--exposure-log", log)
    request_ids = []
    with served(models_dir, *flags, workers=2) as url:
        pids: dict[int, set[int]] = {}  # worker number -> the pids that answered as it
        deadline = time.monotonic() + 60
        while len(pids) < 2:  # new connections until both workers have answered
            answer = httpx.get(f"{url}/livez").json()
            pids.setdefault(answer["worker"], set()).add(answer["pid"])
            assert time.monotonic() < deadline, f"only workers {sorted(pids)} answered"
        assert sorted(pids) == [0, 1] and len(pids[0] | pids[1]) == 2, pids
        # new connections until both workers have logged a request (each file holds only its own)
        deadline = time.monotonic() + 60
        while not all(_lines(path) for path in files):
            for _ in range(4):
                request_ids.append(rank(url)["request_id"])
            assert time.monotonic() < deadline, "one worker never answered /v1/rank"
        wait_for(lambda: sum(len(_lines(path)) for path in files) == len(request_ids))
        counts = [len(_lines(path)) for path in files]
        assert min(counts) >= 1 and sum(counts) == len(request_ids)
        for _ in range(4):  # whichever worker answers the scrape, it counts both workers' requests
            text = httpx.get(f"{url}/metrics").text
            ranked = 'mtrank_requests_total{model="mmoe",route="/v1/rank",status="200",variant=""}'
            assert sample(text, ranked) == len(request_ids), text
            assert sample(text, "mtrank_candidates_count") == len(request_ids)
            assert sample(text, 'mtrank_model_version{model="mmoe"}') == 1  # the max, not a sum
    # a clean stop (served checks the exit status) drained both queues: each exposure once
    assert not log.exists()
    logged = [line["request_id"] for path in files for line in _lines(path)]
    assert sorted(logged) == sorted(request_ids)


def test_a_new_version_reaches_every_worker(
    models_dir: Path,
    embedded_data: Path,
    tmp_path: Path,
    drop_version: Callable[..., Path],
) -> None:
    log = tmp_path / "exposures.jsonl"
    files = [worker_file(log, 0), worker_file(log, 1)]
    flags = ("--store", embedded_data, "--exposure-log", log, "--poll-interval", "0.3")
    with served(models_dir, *flags, workers=2) as url:
        assert rank(url)["version"] == "1"
        drop_version(models_dir, models_dir / "mmoe" / "1", 2)
        deadline = time.monotonic() + 90
        while not all(
            any(line["version"] == "2" for line in _lines(path)) for path in files
        ):  # each worker's own log shows it serving version 2
            rank(url)
            assert time.monotonic() < deadline, "a worker never served version 2"
        assert [rank(url)["version"] for _ in range(10)] == ["2"] * 10  # new connections
        text = httpx.get(f"{url}/metrics").text
        assert sample(text, 'mtrank_model_version{model="mmoe"}') == 2
        loads = 'mtrank_model_loads_total{model="mmoe",outcome="loaded"}'
        assert sample(text, loads) == 4  # versions 1 and 2, loaded by each of the two workers
    for path in files:  # within a worker, once version 2 served, version 1 never again
        versions = [line["version"] for line in _lines(path)]
        assert versions == sorted(versions) and versions[-1] == "2", (path.name, versions)


def test_a_killed_worker_is_replaced_under_its_number(
    models_dir: Path, embedded_data: Path
) -> None:
    with served(models_dir, "--store", embedded_data, workers=2) as url:
        for _ in range(6):
            rank(url)
        victim = _pid_of(url, worker=1)
        os.kill(victim, signal.SIGKILL)  # no clean exit: its live gauges are left behind
        deadline = time.monotonic() + 120
        while (replacement := _pid_of(url, worker=1)) == victim:
            assert time.monotonic() < deadline, "the supervisor never replaced the worker"
        assert replacement != victim
        text = httpx.get(f"{url}/metrics").text
        ranked = 'mtrank_requests_total{model="mmoe",route="/v1/rank",status="200",variant=""}'
        assert sample(text, ranked) == 6  # the dead worker's counts are kept
        assert sample(text, 'mtrank_model_version{model="mmoe"}') == 1


# ---- helpers -----------------------------------------------------------------------------------


def rank(url: str) -> Any:
    """One /v1/rank on a new connection (so any worker may take it); its answer."""
    body = {"user_id": "u2", "item_ids": ITEMS, "context": {"device": "web"}}
    response = httpx.post(f"{url}/v1/rank", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def sample(text: str, series: str) -> float | None:
    """The value of `series` (name and labels exactly as exposed) in a /metrics text."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return None


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of an exposure file written so far."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def _pid_of(url: str, worker: int) -> int:
    """The pid of worker number `worker`, asking /livez on new connections until it answers."""
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = httpx.get(f"{url}/livez", timeout=5).json()
        except httpx.TransportError:
            answer = {}
        if answer.get("worker") == worker:
            return int(answer["pid"])
        assert time.monotonic() < deadline, f"worker {worker} never answered"
        time.sleep(0.05)
