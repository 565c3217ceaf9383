"""Served-feature logging (`mtrank serve --log-features`) and exposure log rotation.

The logged features reproduce the served scores: a batch rebuilt from an exposure line (and the
schema line before it) and given to the model gives the logged scores back (atol 1e-6). Rotation
by size keeps every exposure exactly once across the files, each file with its own schema line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from ranker.schema import Feature, Schema
from serving.app import create_app
from serving.exposure import Exposure, ExposureLog
from serving.exposure.features import values
from serving.exposure.writer import rotated_name
from serving.policies import PolicySet
from serving.servable import Servable
from serving.settings import Settings
from tests.serving.conftest import logged_service_settings

ROOT = Path(__file__).resolve().parents[2]
ITEMS = [f"i{k}" for k in range(40, 70)] + ["nope"]  # 31 candidates, one the store lacks
POLICIES = """\
policies:
  - name: value
    kind: weighted_product
    terms: [{output: ctcvr}, {feature: price, weight: 0.5}, {feature: position, weight: -1}]
"""
ROTATED = re.compile(r"^exposures\.jsonl\.\d{8}T\d{6}Z(-\d+)?$")


def settings(export: Any, store: tuple[str, str], tmp_path: Path, **extra: Any) -> Settings:
    (tmp_path / "pol.yaml").write_text(POLICIES)
    given = {"policies": tmp_path / "pol.yaml", "log_features": True, **extra}
    settings: Settings = logged_service_settings(export.models, store, tmp_path, **given)
    return settings


def rank(client: TestClient, user: str, **body: Any) -> Any:
    response = client.post("/v1/rank", json={"user_id": user, "item_ids": ITEMS, **body})
    assert response.status_code == 200, response.text
    return response.json()


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rebuild(schema: Schema, features: dict[str, Any], rows: int) -> dict[str, np.ndarray]:
    """The model's input arrays from an exposure's `features` (training's layout: float32
    numbers, strings, sequences padded with "")."""
    batch: dict[str, np.ndarray] = {}
    for feature in schema.features:
        if feature.entity == "item":
            column = features["items"][feature.name]
        else:
            column = [features[feature.entity][feature.name]] * rows
        if feature.type == "numeric":
            batch[feature.name] = np.asarray(column, dtype=np.float32)
        elif feature.type == "categorical":
            batch[feature.name] = np.asarray(column, dtype=object)
        else:
            assert feature.max_length is not None
            padded = np.full((rows, feature.max_length), "", dtype=object)
            for row, sequence in enumerate(column):
                padded[row, : len(sequence)] = sequence
            batch[feature.name] = padded
    return batch


def test_logged_features_reproduce_the_served_scores(
    export: Any, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    setup = settings(export, redis_store, tmp_path)
    context = {"device": "ios", "hour": "7", "position": 2.0}
    with TestClient(create_app(setup)) as client:
        top = rank(client, "u3", policy="value", top_k=6, context=context)
        everything = rank(client, "u4", policy="ctr", context={"device": "web"})
        stranger = rank(client, "nobody", top_k=2, policy="cvr")
    lines = read_lines(tmp_path / "exposures.jsonl")
    assert [line.get("kind") for line in lines] == ["schema", None, None, None]  # once per file
    head = lines[0]
    assert (head["model"], head["version"]) == ("mmoe", "1")
    schema = Schema.from_dict(head["schema"])
    servable = Servable.load(export.version_dir, "mmoe", 1)
    assert schema == servable.schema
    policies = PolicySet.load(tmp_path / "pol.yaml")
    for body, line in zip((top, everything, stranger), lines[1:], strict=True):
        assert line["request_id"] == body["request_id"]
        returned = [row["item_id"] for row in body["scores"]]
        assert line["item_ids"] == returned == line["features"]["items"]["item_id"]
        assert line["candidates"] == len(ITEMS)
        batch = rebuild(schema, line["features"], len(returned))
        scores = servable.predict(batch)
        for task in ("ctr", "cvr", "ctcvr"):
            np.testing.assert_allclose(scores[task], line["scores"][task], atol=1e-6)
        policy = policies.find(line["policy"], servable.outputs)
        assert policy is not None
        np.testing.assert_allclose(
            policy.score(scores, batch), line["scores"]["score"], rtol=1e-5, atol=1e-6
        )
    features = lines[1]["features"]
    assert len(top["scores"]) == 6 and len(everything["scores"]) == len(ITEMS)
    assert features["context"] == {"device": "ios", "hour": "7", "position": 2.0}
    assert lines[2]["features"]["context"]["position"] == 1.0  # the default the model got
    assert features["user"]["user_id"] == "u3"
    # values as stored, numbers as the float32 the model got, in their shortest form
    users = {
        row["user_id"]: row for row in pq.read_table(export.data / "users.parquet").to_pylist()
    }
    user = users["u3"]
    assert features["user"]["activity"] == float(str(np.float32(user["activity"])))
    length = schema.feature("recent_items").max_length
    assert features["user"]["recent_items"] == [x for x in user["recent_items"] if x][:length]
    assert "" not in features["user"]["recent_items"]
    items = {
        row["item_id"]: row for row in pq.read_table(export.data / "items.parquet").to_pylist()
    }
    for k, item in enumerate(returned_ids := lines[1]["item_ids"]):
        assert features["items"]["brand"][k] == items[item]["brand"]
        assert features["items"]["price"][k] == float(str(np.float32(items[item]["price"])))
    assert len(returned_ids) == 6
    unknown = lines[2]["features"]["items"]  # "nope" is not in the store: its defaults
    at = lines[2]["item_ids"].index("nope")
    assert (unknown["brand"][at], unknown["price"][at]) == ("", 0.0)
    assert lines[3]["features"]["user"]["recent_items"] == []  # an unknown user


def test_numbers_are_written_in_float32s_shortest_form() -> None:
    x = Feature(name="x", type="numeric", entity="item")
    numbers = np.array([0.1, 1 / 3, 1e-8, np.inf], np.float32)
    assert values(x, numbers) == [0.1, 0.33333334, 1e-08, None]  # not 0.10000000149011612
    assert [np.float32(v) for v in values(x, numbers)[:3]] == numbers[:3].tolist()
    c = Feature(name="c", type="categorical", entity="item", num_buckets=8)
    assert values(c, np.array([b"ios", b""], dtype="S3")) == ["ios", ""]
    assert values(c, np.array(["i1"], dtype=object)) == ["i1"]
    s = Feature(name="s", type="sequence", entity="user", num_buckets=8, max_length=3)
    assert values(s, np.array([[b"i1", b"", b"i2"], [b"", b"", b""]])) == [["i1", "i2"], []]


# ---- rotation ---------------------------------------------------------------------------------


def test_rotation_by_size_loses_and_repeats_nothing(
    export: Any, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    """Files of at most ~6 KB (an exposure with features here is ~2-3 KB): N requests, then a
    clean shutdown, and the N exposures are all there, once each, over several files."""
    setup = settings(export, redis_store, tmp_path, exposure_log_max_mb=6000 / 2**20)
    n = 25
    with TestClient(create_app(setup)) as client:
        ids = [rank(client, f"u{k}", policy="value", top_k=3)["request_id"] for k in range(n)]
        rotations = client.app.state.metrics.registry.get_sample_value  # type: ignore[attr-defined]
    files = sorted(tmp_path.glob("exposures.jsonl*"))
    rotated = [f for f in files if f.name != "exposures.jsonl"]
    assert len(rotated) >= 3, [f.name for f in files]
    assert all(ROTATED.match(f.name) for f in rotated)
    assert rotations("mtrank_exposure_log_rotations_total") == len(rotated)
    logged: list[str] = []
    for path in files:
        lines = read_lines(path)
        assert lines[0]["kind"] == "schema"  # every file starts with its own schema line
        assert [line.get("kind") for line in lines[1:]] == [None] * (len(lines) - 1)
        logged += [line["request_id"] for line in lines[1:]]
        if path in rotated:
            assert path.stat().st_size <= 6000 or len(lines) == 2  # one line alone may be larger
    assert sorted(logged) == sorted(ids)  # every one, none twice


def exposure(request_id: str) -> Exposure:
    return Exposure(
        request_id=request_id,
        time=time.time(),
        user_id="u1",
        experiment=None,
        variant=None,
        bucket=None,
        model="m",
        version="1",
        item_ids=["i1", "i2"],
        context={},
        scores={"ctr": np.array([0.25, 0.5], np.float32)},
        degraded=False,
        order=np.array([1]),
    )


def test_an_idle_file_is_rotated_once_it_is_old_enough(tmp_path: Path) -> None:
    path = tmp_path / "exposures.jsonl"
    log = ExposureLog(path, rotate_s=0.3)
    log.start()
    try:
        log.put(exposure("r1"))
        deadline = time.monotonic() + 30
        while len(list(tmp_path.iterdir())) < 2:  # no traffic: the writer rotates on its own
            assert time.monotonic() < deadline, "never rotated"
            time.sleep(0.05)
        log.put(exposure("r2"))
    finally:
        log.close()
    rotated = [p for p in tmp_path.iterdir() if p != path]
    assert len(rotated) == 1 and ROTATED.match(rotated[0].name)
    first, second = read_lines(rotated[0]), read_lines(path)
    assert [line["request_id"] for line in first + second] == ["r1", "r2"]
    # the returned row only (order [1]), and how many candidates there were
    assert (first[0]["item_ids"], first[0]["scores"], first[0]["candidates"]) == (
        ["i2"], {"ctr": [0.5]}, 2,
    )  # fmt: skip
    assert "features" not in first[0]


def test_a_rotated_name_that_is_taken_gets_a_suffix(tmp_path: Path) -> None:
    now = datetime(2026, 12, 5, 10, 0, 1, tzinfo=UTC)
    path = tmp_path / "x.jsonl"
    first = rotated_name(path, now)
    assert first.name == "x.jsonl.20261205T100001Z"
    first.touch()
    second = rotated_name(path, now)
    assert second.name == "x.jsonl.20261205T100001Z-1"
    second.touch()
    assert rotated_name(path, now).name == "x.jsonl.20261205T100001Z-2"


def test_feature_and_rotation_flags_need_an_exposure_log(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTRANK_")}
    for flags, message in (
        (["--log-features"], "--log-features (log_features) needs --exposure-log"),
        (["--exposure-log-max-mb", "1"], "--exposure-log-max-mb (exposure_log_max_mb) needs"),
        (["--exposure-log", str(tmp_path / "e.jsonl"), "--exposure-log-rotate-minutes", "0"],
         "exposure_log_rotate_minutes: Input should be greater than 0"),
        (["--policies", str(tmp_path / "missing.yaml")], "--policies "),
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "training.cli", "serve", "--models", str(tmp_path), *flags],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mtrank serve: error: "), done.stderr
        assert message in lines[0], lines[0]


@pytest.mark.parametrize("text", ["policies: []\n", "policies:\n  - {name: p, kind: sum}\n"])
def test_serve_with_a_bad_policies_file_is_a_one_line_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "pol.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "serve", "--models", str(tmp_path),
         "--policies", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mtrank serve: error: {path}: policies")
