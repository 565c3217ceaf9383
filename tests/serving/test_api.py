"""The HTTP API of CONTRACT section 4 against a real export and a real Redis (TestClient).

Parity: /v1/rank, :predict and the SavedModel called directly give the same scores for the same
raw features. Bad input: every case is a 4xx naming the field, never a 5xx.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from ranker.schema import Schema
from serving.app import create_app
from serving.settings import Settings

USER = "u1"
ITEMS = ["i3", "i1", "i4", "i1", "i59"]  # a duplicate on purpose: scores follow the request
CONTEXT = {"device": "android", "hour": "13", "position": 2.0}


@pytest.fixture(scope="module")
def client(export: Any, redis_store: tuple[str, str]) -> Iterator[TestClient]:
    url, namespace = redis_store
    settings = Settings(
        models_dir=export.models,
        redis_url=url,
        store_namespace=namespace,
        store_timeout_s=5.0,  # a busy test machine; degraded mode has its own test
        poll_interval_s=0,
        max_items=50,
        max_body_bytes=64 * 1024,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def rank(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/rank", json={"user_id": USER, "item_ids": ITEMS, **body})
    assert response.status_code == 200, response.text
    return response.json()


# ---- the happy path -----------------------------------------------------------------------


def test_rank_scores_every_item_in_request_order(client: TestClient) -> None:
    response = client.post(
        "/v1/rank",
        json={"user_id": USER, "item_ids": ITEMS, "context": CONTEXT},
        headers={"X-Request-ID": "req-123"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == "req-123" == response.headers["x-request-id"]
    assert (body["model"], body["version"], body["variant"]) == ("mmoe", "1", None)
    assert [s["item_id"] for s in body["scores"]] == ITEMS
    for score in body["scores"]:
        assert set(score) == {"item_id", "ctr", "cvr", "ctcvr"}
        assert 0.0 < score["ctr"] < 1.0
        assert score["ctcvr"] == pytest.approx(score["ctr"] * score["cvr"], rel=1e-4)
    assert body["scores"][1] == {**body["scores"][3]}  # the same item, the same scores
    assert body["missing"] == {"user": False, "items": [], "context": []}
    assert body["degraded"] is False


def test_user_and_item_features_change_the_scores(client: TestClient) -> None:
    """The store's features reach the model: a known user scores unlike an unknown one."""
    known = rank(client, context=CONTEXT)["scores"]
    unknown = rank(client, context=CONTEXT, user_id="nobody")["scores"]
    assert not np.allclose([s["ctr"] for s in known], [s["ctr"] for s in unknown], atol=1e-6)


def test_unknown_user_and_items_are_scored_with_defaults_and_reported(
    client: TestClient, export: Any
) -> None:
    body = rank(client, user_id="no-such-user", item_ids=["i1", "no-such-item"])
    assert body["missing"] == {
        "user": True,
        "items": ["no-such-item"],
        "context": ["device", "hour", "position"],
    }
    assert body["degraded"] is False
    # The same numbers as :predict with every stored feature of the unknown entities defaulted.
    schema = Schema.load(export.data / "schema.yaml")
    item = _rows(export, "items")["i1"]
    instances = [
        {"user_id": "no-such-user", **item},
        {"user_id": "no-such-user", "item_id": "no-such-item"},
    ]
    assert set(instances[1]) < set(schema.feature_names)  # the rest default in :predict too
    predicted = client.post("/v1/models/mmoe:predict", json={"instances": instances}).json()
    for ranked, row in zip(body["scores"], predicted["predictions"], strict=True):
        for task in ("ctr", "cvr", "ctcvr"):
            assert ranked[task] == pytest.approx(row[task], abs=1e-5)


def test_rank_predict_and_the_savedmodel_agree(client: TestClient, export: Any) -> None:
    """Parity: the same raw features give the same scores on all three paths (atol 1e-5)."""
    import tensorflow as tf

    ranked = rank(client, context=CONTEXT)["scores"]
    user = _rows(export, "users")[USER]
    items = _rows(export, "items")
    instances = [{**user, **items[item_id], **CONTEXT} for item_id in ITEMS]
    response = client.post("/v1/models/mmoe/versions/1:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predicted = response.json()["predictions"]

    # The SavedModel called directly, with tensors laid out here (not by serving's code).
    schema = Schema.load(export.data / "schema.yaml")
    tensors = {}
    for feature in schema.features:
        values = [instance.get(feature.name, feature.missing_value) for instance in instances]
        if feature.type == "numeric":
            tensors[feature.name] = tf.constant(values, tf.float32)
        elif feature.type == "sequence":
            length = feature.max_length or 0
            padded = [list(v[:length]) + [""] * (length - len(v[:length])) for v in values]
            tensors[feature.name] = tf.constant(padded, tf.string)
        else:
            tensors[feature.name] = tf.constant(values, tf.string)
    model = tf.saved_model.load(str(export.version_dir))
    direct = {k: v.numpy() for k, v in model.signatures["serving_default"](**tensors).items()}

    for task in ("ctr", "cvr", "ctcvr"):
        via_rank = np.array([s[task] for s in ranked])
        via_predict = np.array([p[task] for p in predicted])
        np.testing.assert_allclose(via_rank, direct[task], atol=1e-5)
        np.testing.assert_allclose(via_predict, direct[task], atol=1e-5)


def test_categorical_context_accepts_integers_as_strings(client: TestClient) -> None:
    as_int = rank(client, context={**CONTEXT, "hour": 13})["scores"]
    as_str = rank(client, context=CONTEXT)["scores"]
    assert as_int == as_str


def test_model_status_endpoints(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert [(m["name"], m["version"], m["state"]) for m in models] == [("mmoe", "1", "AVAILABLE")]
    assert models[0]["outputs"] == ["ctr", "cvr", "ctcvr"]
    status = client.get("/v1/models/mmoe").json()
    assert status == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert client.get("/v1/models/mmoe/versions/1").status_code == 200


def test_health_endpoints(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok", "pid": os.getpid(), "worker": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "models": {"mmoe": "1"},
        "store": "ok",
        "degraded": False,
    }


def test_metrics_count_requests_by_route_model_and_variant(client: TestClient) -> None:
    rank(client, user_id="metrics-user")  # unknown: counted as a missing user
    text = client.get("/metrics").text
    assert 'mtrank_requests_total{model="mmoe",route="/v1/rank",status="200",variant=""}' in text
    assert 'mtrank_request_latency_seconds_bucket{le="0.025",model="mmoe",route="/v1/rank"' in text
    assert "mtrank_store_latency_seconds_count" in text
    assert 'mtrank_missing_features_total{entity="user"}' in text
    assert "mtrank_degraded_requests_total" in text
    assert 'mtrank_model_version{model="mmoe"} 1.0' in text
    assert _sample(text, 'mtrank_missing_features_total{entity="user"}') >= 1


# ---- bad input: 4xx naming the field, never 5xx -----------------------------------------------

GOOD: dict[str, Any] = {"user_id": USER, "item_ids": ["i1"]}


@pytest.mark.parametrize(
    ("path", "body", "status", "loc"),
    [
        ("/v1/rank", "{not json", 422, ["body", 1]),
        ("/v1/rank", "[1, 2]", 422, ["body"]),
        ("/v1/rank", {"item_ids": ["i1"]}, 422, ["body", "user_id"]),
        ("/v1/rank", {**GOOD, "user_id": 42}, 422, ["body", "user_id"]),
        ("/v1/rank", {**GOOD, "item_ids": "i1"}, 422, ["body", "item_ids"]),
        ("/v1/rank", {**GOOD, "item_ids": ["i1", 7]}, 422, ["body", "item_ids", 1]),
        ("/v1/rank", {**GOOD, "item_ids": []}, 422, ["body", "item_ids"]),
        ("/v1/rank", {**GOOD, "item_ids": ["i1"] * 51}, 413, ["body", "item_ids"]),
        ("/v1/rank", {**GOOD, "context": {"hour": 1.5}}, 422, ["body", "context", "hour"]),
        ("/v1/rank", {**GOOD, "context": {"position": "1"}}, 422, ["body", "context", "position"]),
        ("/v1/rank", {**GOOD, "context": {"position": True}}, 422, ["body", "context", "position"]),
        ("/v1/rank", {**GOOD, "context": {"colour": "red"}}, 422, ["body", "context", "colour"]),
        ("/v1/rank", {**GOOD, "context": {"price": 3.0}}, 422, ["body", "context", "price"]),
        ("/v1/rank", {**GOOD, "context": []}, 422, ["body", "context"]),
        ("/v1/rank", {**GOOD, "surprise": 1}, 422, ["body", "surprise"]),
        (
            "/v1/models/mmoe:predict",
            {"instances": [{"price": "cheap"}]},
            422,
            ["body", "instances", 0, "price"],
        ),
        (
            "/v1/models/mmoe:predict",
            {"instances": [{}, {"recent_items": ["i1", 3.5]}]},
            422,
            ["body", "instances", 1, "recent_items", 1],
        ),
        (
            "/v1/models/mmoe:predict",
            {"instances": [{"nope": 1}]},
            422,
            ["body", "instances", 0, "nope"],
        ),
        ("/v1/models/mmoe:predict", {"instances": []}, 422, ["body", "instances"]),
        ("/v1/models/mmoe:predict", {"inputs": {}}, 422, ["body", "instances"]),
        ("/v1/models/mmoe:predict", {"instances": [{}] * 51}, 413, ["body", "instances"]),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    client: TestClient, path: str, body: Any, status: int, loc: list[Any]
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    assert detail[0]["loc"] == loc, detail
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/rank", {**GOOD, "model": "no-such-model"}),
        ("/v1/rank", {**GOOD, "experiment": "no-such-experiment"}),
        ("/v1/models/no-such-model:predict", {"instances": [{}]}),
        ("/v1/models/mmoe/versions/7:predict", {"instances": [{}]}),
        ("/v1/models/mmoe/versions/latest:predict", {"instances": [{}]}),
    ],
)
def test_unknown_model_version_or_experiment_is_404(
    client: TestClient, path: str, body: Any
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 404, response.text
    assert isinstance(response.json()["detail"], str)


def test_unknown_model_status_is_404(client: TestClient) -> None:
    assert client.get("/v1/models/no-such-model").status_code == 404
    assert client.get("/v1/models/mmoe/versions/9").status_code == 404


def test_a_body_over_the_limit_is_413_before_it_is_read(client: TestClient) -> None:
    big = {**GOOD, "context": {"device": "x" * 70_000}}
    response = client.post("/v1/rank", json=big)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "u1", "item_ids": ["i1"], "context": {"device": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}}'

    response = client.post(
        "/v1/rank", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text


def test_admin_endpoints_need_the_api_key(export: Any) -> None:
    settings = Settings(models_dir=export.models, poll_interval_s=0, api_key="sekret")
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/admin/reload").status_code == 401
        wrong = client.post("/v1/admin/reload", headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401
        ok = client.post("/v1/admin/reload", headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["models"][0]["version"] == "1"
        # No store configured: scored with defaults, and said so.
        body = client.post("/v1/rank", json=GOOD).json()
        assert body["degraded"] is True and body["missing"]["user"] is True
        assert client.get("/readyz").json()["store"] == "disabled"


def test_admin_endpoints_without_a_key_answer_loopback_only(export: Any) -> None:
    settings = Settings(models_dir=export.models, poll_interval_s=0)
    with TestClient(create_app(settings)) as remote:  # TestClient's client host is "testclient"
        assert remote.post("/v1/admin/reload").status_code == 403


# ---- helpers -------------------------------------------------------------------------------------


def _rows(export: Any, table: str) -> dict[str, dict[str, Any]]:
    """users.parquet / items.parquet as {id: {feature: raw value}}, nulls left out."""
    rows = pq.read_table(export.data / f"{table}.parquet").to_pylist()
    key = "user_id" if table == "users" else "item_id"
    return {row[key]: {k: v for k, v in row.items() if v is not None} for row in rows}


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}")
