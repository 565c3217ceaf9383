"""Model versions: a new version is picked up while requests are in flight; a broken one (corrupt
files, a schema that does not match the signature) is refused while the old one keeps serving;
pinning a version; the newest version broken at startup falls back to the one before it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.errors import ModelLoadError
from serving.manager import ModelManager
from serving.servable import Servable
from serving.settings import Settings

API_KEY = "test-admin-key"
ADMIN = {"X-API-Key": API_KEY}
DropVersion = Callable[..., Path]


def corrupt_graph(version_dir: Path) -> None:
    (version_dir / "saved_model.pb").write_bytes(b"this is not a protobuf")


def schema_mismatch(version_dir: Path) -> None:
    """The metadata's schema says `price` is categorical; the signature takes float32."""
    path = version_dir / "metadata.json"
    metadata = json.loads(path.read_text())
    for feature in metadata["schema"]["features"]:
        if feature["name"] == "price":
            feature.clear()
            feature.update(name="price", type="categorical", entity="item", num_buckets=10)
    path.write_text(json.dumps(metadata))


def truncated_variables(version_dir: Path) -> None:
    for path in (version_dir / "variables").glob("variables.data*"):
        path.write_bytes(path.read_bytes()[:100])


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


class Traffic:
    """/v1/rank in a loop on a thread, recording every status and version answered."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"user_id": "u1", "item_ids": [f"i{i}" for i in range(100)]}
        while not self._stop.is_set():
            response = self.client.post("/v1/rank", json=body)
            version = response.json().get("version") if response.status_code == 200 else None
            self.answers.append((response.status_code, version))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def client(models_dir: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=models_dir, poll_interval_s=0.2, api_key=API_KEY)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def serving(client: TestClient) -> str:
    return str(client.get("/v1/models").json()["models"][0]["version"])


def status(client: TestClient) -> dict[str, dict[str, Any]]:
    entries = client.get("/v1/models/mmoe").json()["model_version_status"]
    return {entry["version"]: entry for entry in entries}


def test_new_version_swaps_in_and_broken_ones_are_refused_under_traffic(
    client: TestClient, models_dir: Path, drop_version: DropVersion
) -> None:
    v1 = models_dir / "mmoe" / "1"
    with Traffic(client) as traffic:
        wait_for(lambda: len(traffic.answers) >= 3)
        drop_version(models_dir, v1, 2)
        wait_for(lambda: serving(client) == "2")
        drop_version(models_dir, v1, 3, change=corrupt_graph)
        wait_for(lambda: status(client).get("3", {}).get("state") == "END")
        drop_version(models_dir, v1, 4, change=schema_mismatch)
        wait_for(lambda: status(client).get("4", {}).get("state") == "END")
        answered = len(traffic.answers)
        wait_for(lambda: len(traffic.answers) >= answered + 3)

    statuses = {code for code, _ in traffic.answers}
    versions = [version for _, version in traffic.answers]
    assert statuses == {200}, traffic.answers
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions), "a request went back to the old version"
    assert serving(client) == "2"
    now = status(client)
    assert now["2"]["state"] == "AVAILABLE"
    assert now["1"]["state"] == "END" and now["1"]["status"]["error_code"] == "OK"
    assert now["3"]["status"]["error_code"] != "OK"
    assert "SavedModel" in now["3"]["status"]["error_message"]
    assert now["4"]["status"]["error_code"] == "INVALID_ARGUMENT"
    assert "price" in now["4"]["status"]["error_message"]
    metrics = client.get("/metrics").text
    assert 'mtrank_model_loads_total{model="mmoe",outcome="refused"} 2.0' in metrics
    assert 'mtrank_model_version{model="mmoe"} 2.0' in metrics


def test_pin_and_unpin_a_version(
    client: TestClient, models_dir: Path, drop_version: DropVersion
) -> None:
    drop_version(models_dir, models_dir / "mmoe" / "1", 2)
    wait_for(lambda: serving(client) == "2")

    assert client.put("/v1/admin/models/mmoe/pin", json={"version": 1}).status_code == 401
    pinned = client.put("/v1/admin/models/mmoe/pin", json={"version": 1}, headers=ADMIN)
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["state"] == "AVAILABLE" and pinned.json()["version"] == "1"
    assert (
        client.post("/v1/rank", json={"user_id": "u1", "item_ids": ["i1"]}).json()["version"] == "1"
    )
    drop_version(models_dir, models_dir / "mmoe" / "1", 3)
    time.sleep(1.0)  # several polls: a pinned model does not move
    assert serving(client) == "1"
    assert client.get("/v1/models").json()["models"][0]["pinned"] == 1

    missing = client.put("/v1/admin/models/mmoe/pin", json={"version": 9}, headers=ADMIN)
    assert missing.status_code == 404
    unknown = client.put("/v1/admin/models/nope/pin", json={"version": 1}, headers=ADMIN)
    assert unknown.status_code == 404

    unpinned = client.delete("/v1/admin/models/mmoe/pin", headers=ADMIN)
    assert unpinned.status_code == 200
    assert unpinned.json()["version"] == "3"


def test_pinning_a_broken_version_is_409_and_changes_nothing(
    client: TestClient, models_dir: Path, drop_version: DropVersion
) -> None:
    drop_version(models_dir, models_dir / "mmoe" / "1", 2, change=truncated_variables)
    wait_for(lambda: status(client).get("2", {}).get("state") == "END")
    response = client.put("/v1/admin/models/mmoe/pin", json={"version": 2}, headers=ADMIN)
    assert response.status_code == 409
    assert "cannot serve" in response.json()["detail"]
    assert serving(client) == "1"


def test_startup_falls_back_when_the_newest_version_is_broken(
    models_dir: Path, drop_version: DropVersion
) -> None:
    drop_version(models_dir, models_dir / "mmoe" / "1", 2, change=corrupt_graph)
    (models_dir / "mmoe" / "not-a-version").mkdir()
    manager = ModelManager(models_dir, warmup_rows=4)
    events = manager.refresh()
    assert events == [("mmoe", 2, "refused"), ("mmoe", 1, "loaded")]
    servable = manager.get("mmoe")
    assert servable is not None and servable.version == 1
    assert manager.refresh() == []  # a refused version is not retried on every poll
    manager.forget_failures()
    assert manager.refresh() == [("mmoe", 2, "refused")]


def test_removing_the_serving_version_rolls_back(
    models_dir: Path, drop_version: DropVersion
) -> None:
    import shutil

    v2 = drop_version(models_dir, models_dir / "mmoe" / "1", 2)
    manager = ModelManager(models_dir, warmup_rows=4)
    manager.refresh()
    assert manager.get("mmoe").version == 2  # type: ignore[union-attr]
    shutil.rmtree(v2)
    assert manager.refresh() == [("mmoe", 1, "loaded")]
    assert manager.get("mmoe").version == 1  # type: ignore[union-attr]


def test_a_version_the_admit_hook_refuses_leaves_the_old_one_serving(
    models_dir: Path, drop_version: DropVersion
) -> None:
    manager = ModelManager(models_dir, warmup_rows=4)
    manager.refresh()
    seen: list[int] = []

    def admit(servable: Servable) -> None:
        seen.append(servable.version)
        if servable.version == 2:
            raise ModelLoadError("does not fit the policies", "FAILED_PRECONDITION")

    manager.admit = admit
    drop_version(models_dir, models_dir / "mmoe" / "1", 2)
    assert manager.refresh() == [("mmoe", 2, "refused")]
    assert manager.get("mmoe").version == 1  # type: ignore[union-attr]
    refused = {s.version: s for s in manager.status("mmoe")}[2]
    assert (refused.state, refused.error_code) == ("END", "FAILED_PRECONDITION")
    drop_version(models_dir, models_dir / "mmoe" / "1", 3)
    assert manager.refresh() == [("mmoe", 3, "loaded")]
    assert seen == [2, 3]
