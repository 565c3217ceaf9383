"""The service on a Redis Cluster whose master is killed under traffic: 200s marked degraded (never a
5xx, none waiting past the store's timeout) until its replica takes over, then full answers again,
the same as before the kill, without restarting the service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from feature_store.keys import pointer_key
from serving.app import create_app
from serving.settings import Settings
from tests.feature_store.redis_cluster import LocalCluster, local_cluster

BODY = {"user_id": "u1", "item_ids": [f"i{i}" for i in range(1, 41)]}
TIMEOUT_S = 0.5
RECOVERY_DEADLINE_S = 60.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of its own: this test kills one of its masters."""
    with local_cluster(tmp_path / "cluster") as started:
        yield started


def test_a_master_killed_under_traffic_degrades_then_recovers_without_a_restart(
    export: Any, cluster: LocalCluster, models_dir: Path, run_mtrank: Callable[..., str]
) -> None:
    run_mtrank("features", "materialize", "--data", export.data, "--redis", cluster.url)
    cluster.wait_replicated()  # what the master acknowledged, its replica has
    settings = Settings(
        models_dir=models_dir,
        redis_url=cluster.url,
        store_timeout_s=TIMEOUT_S,
        store_retry_after_s=0.2,
        store_cache_rows=0,  # every request goes to the cluster
        poll_interval_s=0,
    )
    with TestClient(create_app(settings)) as client:
        healthy = client.post("/v1/rank", json=BODY).json()
        assert healthy["degraded"] is False
        assert healthy["missing"]["user"] is False and healthy["missing"]["items"] == []

        victim = cluster.master_of(pointer_key(settings.store_namespace))  # read by every lookup
        cluster.kill(victim)
        killed = time.monotonic()
        degraded = 0
        while True:
            started = time.perf_counter()
            response = client.post("/v1/rank", json=BODY)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            body = response.json()
            if not body["degraded"]:
                break
            degraded += 1
            assert elapsed < TIMEOUT_S + 2.0, f"a degraded request took {elapsed:.2f} s"
            assert body["missing"]["user"] is True  # defaults, not a half-read store
            assert time.monotonic() - killed < RECOVERY_DEADLINE_S, "never left degraded mode"
            time.sleep(0.02)
        recovered_after = time.monotonic() - killed

        assert degraded > 0  # the kill was seen: the first request after it had no master
        assert victim not in cluster.masters()
        assert body["scores"] == healthy["scores"]  # the replica's copy, the same features
        assert body["missing"] == healthy["missing"]
        assert client.get("/readyz").json()["store"] == "ok"
        print(f"\nmaster {victim} killed: {degraded} degraded answers, full answers again after "
              f"{recovered_after:.2f} s")  # fmt: skip
