"""Fixtures for the service tests: one small trained export per session, stores that hold its data.

The export is made by the real `mtrank synth` and `mtrank train` (about half a minute), once;
tests that change a models directory work on a copy (`models_dir`). `redis_store` materializes
the data into the session Redis (`redis_url` from tests/conftest.py) under its own namespace;
`embedded_data` into the embedded store under the data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import delete_namespace

ROOT = Path(__file__).resolve().parents[2]
HPARAMS = "hparams: {num_experts: 2, expert_units: [16], tower_units: [8]}\n"


def mtrank(*args: str | Path, env: dict[str, str] | None = None) -> str:
    """Run `mtrank ARGS` in a subprocess; its stdout (fails the test with stderr if it fails)."""
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", *map(str, args)],
        cwd=ROOT,
        env=env or without_redis_url(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"mtrank {args[0]} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def without_redis_url() -> dict[str, str]:
    """The environment minus REDIS_URL, so that the embedded store is the one meant."""
    return {k: v for k, v in os.environ.items() if k != "REDIS_URL"}


def service_env() -> dict[str, str]:
    """The environment minus REDIS_URL and every MTRANK_* setting: a subprocess gets only the
    store and settings its flags give it."""
    return {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("MTRANK_")}


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`mtrank ARGS` in a subprocess (`service_env`); its result."""
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *map(str, args)],
        cwd=ROOT, env=service_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def logged_service_settings(
    models: Path, store: tuple[str, str], tmp_path: Path, **extra: Any
) -> Any:
    """Settings of an in-process service on the session Redis `store` (url, namespace) that logs
    exposures to TMP/exposures.jsonl: no polling, no access log, a 5 s store timeout (a busy
    test machine); `extra` adds or overrides fields (experiments, policies, log_features, ...)."""
    from serving.settings import Settings

    url, namespace = store
    given: dict[str, Any] = {
        "models_dir": models,
        "redis_url": url,
        "store_namespace": namespace,
        "store_timeout_s": 5.0,
        "poll_interval_s": 0,
        "exposure_log": tmp_path / "exposures.jsonl",
        "access_log": False,
        "gc_freeze": False,
    }
    return Settings(**{**given, **extra})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(models: Path, *flags: str | Path, workers: int = 1) -> Iterator[str]:
    """`mtrank serve --models MODELS FLAGS` on a free port until the block ends: yields its URL
    once /readyz answers 200 (with `workers` > 1: `--workers N`, and once N different processes
    answered /livez), then stops it with Ctrl-C and checks that it exited cleanly (so the
    exposure log is complete when the block is over)."""
    import httpx

    if workers > 1:
        flags = ("--workers", str(workers), *flags)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "serve", "--models", str(models),
         "--port", str(port), "--poll-interval", "0", "--log-level", "warning", *map(str, flags)],
        cwd=ROOT, env=service_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1][-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
        pids: set[int] = set()
        while len(pids) < workers:  # each request on a new connection: any worker may take it
            assert server.poll() is None, server.communicate()[1][-3000:]
            with contextlib.suppress(httpx.TransportError):
                pids.add(httpx.get(f"{url}/livez", timeout=2).json()["pid"])
            assert time.monotonic() < deadline, f"only {len(pids)} workers ever answered"
            time.sleep(0.05)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr[-3000:]


@dataclass(frozen=True)
class Export:
    data: Path  # synth output: users.parquet, items.parquet, schema.yaml, ...
    models: Path  # MODELS with mmoe/1

    @property
    def version_dir(self) -> Path:
        return self.models / "mmoe" / "1"


@pytest.fixture(scope="session")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    root = tmp_path_factory.mktemp("export")
    data, models = root / "data", root / "models"
    mtrank("synth", "--out", data, "--rows", "20000", "--users", "500", "--items", "200")
    config = root / "train.yaml"
    config.write_text(HPARAMS)
    mtrank(
        "train", "--data", data, "--model", "mmoe", "--out", models, "--epochs", "1",
        "--batch-size", "2048", "--config", config, "--quiet",
    )  # fmt: skip
    return Export(data, models)


@pytest.fixture(scope="session")
def embedded_data(export: Export) -> Path:
    """The export's data directory with its embedded online store filled."""
    mtrank("features", "materialize", "--data", export.data)
    return export.data


@pytest.fixture(scope="session")
def redis_store(export: Export, redis_url: str) -> Iterator[tuple[str, str]]:
    """(url, namespace) of the session Redis holding the export's users and items."""
    namespace = f"serving-{uuid.uuid4().hex[:8]}"
    mtrank(
        "features", "materialize", "--data", export.data, "--redis", redis_url,
        "--namespace", namespace,
    )  # fmt: skip
    yield redis_url, namespace
    delete_namespace(redis_url, namespace)


@pytest.fixture
def models_dir(export: Export, tmp_path: Path) -> Path:
    """A private copy of the export's models directory (mmoe/1), free to change."""
    target = tmp_path / "models"
    shutil.copytree(export.models, target)
    return target


@pytest.fixture
def drop_version() -> Callable[..., Path]:
    """`drop_version(models, source, version, name="mmoe", change=None)`: see `_drop_version`."""
    return _drop_version


def _drop_version(
    models: Path,
    source: Path,
    version: int,
    name: str = "mmoe",
    change: Callable[[Path], None] | None = None,
) -> Path:
    """Copy the version directory `source` in as MODELS/NAME/VERSION, appearing atomically
    (renamed into place, as `mtrank train` does); `change(staging_dir)` may alter it first."""
    staging = models / name / f".staging-{version}"
    shutil.copytree(source, staging)
    if change is not None:
        change(staging)
    target = models / name / str(version)
    staging.rename(target)
    return target


@pytest.fixture(scope="session")
def run_mtrank() -> Callable[..., str]:
    """`run_mtrank(*args)`: `mtrank ARGS` in a subprocess (REDIS_URL unset); its stdout."""
    return mtrank
