"""`mtrank serve`: one-line errors for bad flags, and a real server on a loopback port that
answers over HTTP from the embedded store and writes JSON access logs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import free_port, service_env

ROOT = Path(__file__).resolve().parents[2]


def serve(*args: str | Path, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "training.cli", "serve", *map(str, args)],
        cwd=ROOT,
        env=service_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "/no/such/dir"], "no such directory"),
        (["--models", "{models}", "--store", "{tmp}"], "materialize"),
        (["--models", "{models}", "--port", "-1"], "port"),
        (["--models", "{models}", "--experiments", "/no/such.yaml"], "no such file"),
    ],
)
def test_bad_flags_are_one_line_errors(
    args: list[str], message: str, export: Any, tmp_path: Path
) -> None:
    filled = [a.format(models=export.models, tmp=tmp_path) for a in args]
    process = serve(*filled)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtrank serve: error:"), stderr
    assert message in lines[0]


def test_serves_over_http_with_the_embedded_store(export: Any, embedded_data: Path) -> None:
    port = free_port()
    process = serve(
        "--models", export.models, "--store", embedded_data, "--port", str(port),
        "--poll-interval", "0",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1][-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
        response = httpx.post(
            f"{base}/v1/rank",
            json={"user_id": "u2", "item_ids": ["i5", "i6"], "context": {"device": "web"}},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["missing"]["user"] is False and body["degraded"] is False
        assert httpx.get(f"{base}/readyz").json()["store"] == "ok"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    access = [json.loads(line) for line in stderr.splitlines() if '"request_id"' in line]
    ranked = [entry for entry in access if entry["route"] == "/v1/rank"]
    assert len(ranked) == 1
    entry = ranked[0]
    assert entry["request_id"] == body["request_id"]
    assert (entry["model"], entry["version"], entry["status"]) == ("mmoe", "1", 200)
    assert entry["latency_ms"] > 0 and entry["items"] == 2 and "variant" in entry
