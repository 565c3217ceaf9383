"""Ranking policies: the file (one-line errors naming the key), the fusion maths (hand-computed),
`policy` and `top_k` in `/v1/rank`, variants that share one model and differ only in policy (the
orders their formulas say, the exposures, `mtrank ab-report`), and reloading the file while the
service runs (a bad edit refused, the old policies serving on).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.errors import ModelLoadError
from serving.experiments import ExperimentsError, ExperimentsFile
from serving.policies import PoliciesError, Policy, PolicySet, Term, top_rows
from serving.settings import Settings
from tests.serving.conftest import logged_service_settings
from training.cli import main

ITEMS = [f"i{k}" for k in range(3, 23)]  # 20 candidates
CONTEXT = {"device": "android", "hour": "13"}

POLICIES = """\
policies:
  - name: ctcvr_price
    kind: weighted_product
    terms:
      - {output: ctr, weight: 1.0}
      - {output: cvr, weight: 1.0}
      - {feature: price, weight: 0.5}
  - name: blend
    kind: weighted_sum
    bias: 0.25
    terms:
      - {output: ctr, weight: 2.0}
      - {feature: popularity, weight: -0.5, transform: log1p}
"""

EXPERIMENTS = """\
experiments:
  - name: fusion
    salt: fusion-1
    variants:
      - {name: by_ctr, model: mmoe, policy: ctr, weight: 50}
      - {name: by_value, model: mmoe, policy: ctcvr_price, weight: 50}
"""


# ---- the maths --------------------------------------------------------------------------------

OUTPUTS = {"ctr": np.array([0.5, 0.1, 0.0], np.float32), "cvr": np.array([0.25, 0.5, 0.5])}
BATCH = {"price": np.broadcast_to(np.float32(4.0), (3,)), "n": np.array([0.0, 3.0, -2.0])}


def test_weighted_product_is_the_product_of_floored_powers() -> None:
    policy = Policy(
        name="p",
        kind="weighted_product",
        eps=0.01,
        terms=[
            Term(output="ctr"),
            Term(output="cvr", weight=2.0),
            Term(feature="price", weight=0.5),
        ],
    )
    # 0.5 * 0.25^2 * 4^0.5 = 0.0625; 0.1 * 0.5^2 * 2 = 0.05; max(0, 0.01) * 0.25 * 2 = 0.005
    np.testing.assert_allclose(policy.score(OUTPUTS, BATCH), [0.0625, 0.05, 0.005], rtol=1e-6)


def test_weighted_sum_adds_the_bias_and_log1p_clips_at_zero() -> None:
    policy = Policy(
        name="s",
        kind="weighted_sum",
        bias=1.0,
        terms=[Term(output="ctr", weight=2.0), Term(feature="n", weight=-1.0, transform="log1p")],
    )
    # 1 + 2 * ctr - log(1 + max(n, 0)): 2.0, 1.2 - log 4, 1.0
    expected = [2.0, 1.2 - np.log(4.0), 1.0]
    np.testing.assert_allclose(policy.score(OUTPUTS, BATCH), expected, rtol=1e-6)


def test_an_output_is_its_own_policy_and_overflow_stays_a_number() -> None:
    implicit = Policy.of_output("cvr")
    assert implicit.score(OUTPUTS, BATCH).tolist() == [0.25, 0.5, 0.5]
    huge = Policy(name="h", kind="weighted_product", terms=[Term(feature="price", weight=100.0)])
    wide = {"price": np.array([1e300, 2.0, 0.5])}
    score = huge.score(OUTPUTS, wide)
    assert np.isfinite(score).all() and score[0] == np.finfo(np.float64).max
    assert score[1] == pytest.approx(2.0**100)


def test_top_rows_are_best_first_with_ties_in_request_order() -> None:
    score = np.array([0.5, 0.7, 0.5, 0.7, 0.1])
    assert top_rows(score, 3).tolist() == [1, 3, 0]
    assert top_rows(score, 9).tolist() == [1, 3, 0, 2, 4]  # k beyond n: every row
    assert top_rows(score, None).tolist() == [1, 3, 0, 2, 4]


# ---- the file ---------------------------------------------------------------------------------

ONE = "policies:\n  - {name: p, kind: weighted_sum, terms: [{output: ctr}]}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (POLICIES.replace("weight: 2.0", "wieght: 2.0"),
         "policies[1].terms[0].wieght: unknown key (policy 'blend')"),
        (POLICIES.replace("kind: weighted_sum", "kind: maximum"),
         "policies[1].kind: Input should be 'weighted_product' or 'weighted_sum', got 'maximum'"),
        ("policies:\n  - {name: p, kind: weighted_sum, terms: []}\n",
         "policies[0].terms: List should have at least 1 item after validation, not 0"),
        (POLICIES.replace("weight: 0.5", "weight: heavy"),
         "policies[0].terms[2].weight: Input should be a valid number (policy 'ctcvr_price')"),
        (POLICIES.replace("weight: 0.5", "weight: '0.5'"), "policies[0].terms[2].weight: "),
        (POLICIES.replace("name: blend", "name: ctcvr_price"),
         "policies: duplicate policy name 'ctcvr_price'"),
        (POLICIES.replace("{output: ctr, weight: 2.0}", "{output: ctr, feature: price}"),
         "policies[1].terms[0]: a term reads exactly one of 'output' and 'feature'"),
        (POLICIES.replace("bias: 0.25", "eps: 0.1"),
         "policies[1].eps: only a weighted_product has an eps (policy 'blend')"),
        (POLICIES + "default: best\n", "default: no policy named 'best'"),
        (POLICIES + "defaults: blend\n", "defaults: unknown key"),
        (ONE.replace("}]}", "}]"), "pol.yaml:3: not valid YAML"),
        ("- a list\n", "expected a mapping with a 'policies' list, got list"),
    ],
)  # fmt: skip
def test_policies_file_errors_are_one_line_naming_the_key(
    text: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "pol.yaml"
    path.write_text(text)
    with pytest.raises(PoliciesError) as caught:
        PolicySet.load(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


class _Model:
    """What a policy is checked against (a Servable's name, outputs and schema)."""

    def __init__(self, export: Any) -> None:
        from ranker.schema import Schema

        self.name = "mmoe"
        self.outputs = ["ctr", "cvr", "ctcvr"]
        self.schema = Schema.load(export.data / "schema.yaml")


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("policy: dwell",
         "experiments[0].variants[1].policy: unknown policy 'dwell' (policies in "),
        ("policy: needs_dwell",
         "experiments[0].variants[1].policy: policy 'needs_dwell' needs output 'dwell', which "
         "model 'mmoe' lacks (outputs: ['ctr', 'cvr', 'ctcvr']) (pol.yaml policies[2].terms[1]."
         "output) (experiment 'fusion')"),
        ("policy: by_brand",
         "experiments[0].variants[1].policy: policy 'by_brand' needs numeric feature 'brand', "
         "which model 'mmoe' has as a categorical feature, not a numeric one"),
    ],
)  # fmt: skip
def test_a_variant_policy_must_fit_its_model(
    variant: str, message: str, export: Any, tmp_path: Path
) -> None:
    text = POLICIES + (
        "  - {name: needs_dwell, kind: weighted_sum, terms: [{output: ctr}, {output: dwell}]}\n"
        "  - {name: by_brand, kind: weighted_sum, terms: [{feature: brand}]}\n"
    )
    (tmp_path / "pol.yaml").write_text(text)
    policies = PolicySet.load(tmp_path / "pol.yaml")
    raw = EXPERIMENTS.replace("policy: ctcvr_price", variant)
    experiments = ExperimentsFile.from_dict(_yaml(raw))
    models = {"mmoe": _Model(export)}
    fits = ExperimentsFile.from_dict(_yaml(EXPERIMENTS))  # so the test can fail
    fits.check_policies(policies, models)  # type: ignore[arg-type]
    with pytest.raises(ExperimentsError) as caught:
        experiments.check_policies(policies, models, source="exp.yaml")  # type: ignore[arg-type]
    assert str(caught.value).startswith("exp.yaml: ")
    assert message.replace("pol.yaml", str(tmp_path / "pol.yaml")) in str(caught.value)


def test_a_model_with_an_output_named_score_fits_no_policy(export: Any, tmp_path: Path) -> None:
    """Its rows would carry the task's `score` and the fused `score`: the default, a variant's
    policy and the implicit policy of an output all refuse it, naming the model."""
    (tmp_path / "pol.yaml").write_text("default: blend\n" + POLICIES)
    policies = PolicySet.load(tmp_path / "pol.yaml")
    fits, named_score = _Model(export), _Model(export)
    named_score.outputs = ["ctr", "score"]
    policies.check_default([fits])  # so the test can fail
    with pytest.raises(PoliciesError, match="model 'mmoe' has an output named 'score'"):
        policies.check_default([named_score])
    why = (
        "model 'mmoe' has an output named 'score', the column of a policy's fused value: "
        "rank it without a policy, or rename that task"
    )
    for name in ("ctcvr_price", "ctr", "score"):  # the file's, and two outputs' implicit ones
        policy = policies.find(name, named_score.outputs)
        assert policy is not None and policy.problem(named_score) == ("name", why)
    assert policies.policies["ctcvr_price"].problem(fits) is None


def _yaml(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


# ---- the service ------------------------------------------------------------------------------


def settings(models: Path, store: tuple[str, str], tmp_path: Path, **extra: Any) -> Settings:
    if not (tmp_path / "pol.yaml").exists():
        (tmp_path / "pol.yaml").write_text(POLICIES)
    given = {"policies": tmp_path / "pol.yaml", **extra}
    settings: Settings = logged_service_settings(models, store, tmp_path, **given)
    return settings


@pytest.fixture
def client(export: Any, redis_store: tuple[str, str], tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(export.models, redis_store, tmp_path))) as test_client:
        yield test_client


def rank(client: TestClient, user: str = "u1", **body: Any) -> Any:
    response = client.post(
        "/v1/rank", json={"user_id": user, "item_ids": ITEMS, "context": CONTEXT, **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


def prices(export: Any) -> dict[str, np.float32]:
    items = pq.read_table(export.data / "items.parquet").to_pylist()
    return {row["item_id"]: np.float32(row["price"]) for row in items}


def column(body: Any, name: str) -> np.ndarray:
    return np.array([row[name] for row in body["scores"]], dtype=np.float64)


def test_top_k_returns_the_k_best_by_score_best_first(client: TestClient, export: Any) -> None:
    everything = rank(client, policy="ctcvr_price")  # no top_k: every row, request order
    assert everything["policy"] == "ctcvr_price"
    assert [row["item_id"] for row in everything["scores"]] == ITEMS
    price = np.array([prices(export)[item] for item in ITEMS], np.float64)
    expected = column(everything, "ctr") * column(everything, "cvr") * np.sqrt(price)
    np.testing.assert_allclose(column(everything, "score"), expected, rtol=1e-5)

    top = rank(client, policy="ctcvr_price", top_k=5)
    assert len(top["scores"]) == 5
    assert set(top["scores"][0]) == {"item_id", "ctr", "cvr", "ctcvr", "score"}
    best = [ITEMS[i] for i in np.argsort(-expected, kind="stable")[:5]]
    assert [row["item_id"] for row in top["scores"]] == best
    assert (np.diff(column(top, "score")) <= 0).all()
    # the same rows as in the full answer, with the same numbers
    by_id = {row["item_id"]: row for row in everything["scores"]}
    assert all(row == by_id[row["item_id"]] for row in top["scores"])

    assert len(rank(client, policy="ctr", top_k=50)["scores"]) == len(ITEMS)  # k > n: all
    by_ctr = rank(client, policy="ctr", top_k=3)  # an output is a policy too
    assert column(by_ctr, "score").tolist() == column(by_ctr, "ctr").tolist()
    assert [r["item_id"] for r in by_ctr["scores"]] != best[:3]  # another formula, another order

    plain = rank(client)  # no policy anywhere: today's answer, no score
    assert plain["policy"] is None and "score" not in plain["scores"][0]


def test_the_weighted_sum_orders_by_its_formula(client: TestClient, export: Any) -> None:
    body = rank(client, policy="blend")
    items = pq.read_table(export.data / "items.parquet").to_pylist()
    popularity = {row["item_id"]: np.float32(row["popularity"]) for row in items}
    pop = np.array([popularity[item] for item in ITEMS], np.float64)
    expected = 0.25 + 2.0 * column(body, "ctr") - 0.5 * np.log1p(np.maximum(pop, 0))
    np.testing.assert_allclose(column(body, "score"), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"top_k": 3}, ["body", "top_k"], "top_k ranks by a policy's score, and none applies"),
        ({"policy": "nope"}, ["body", "policy"], "unknown policy 'nope' (policies: ['blend', "),
        ({"policy": "nope", "top_k": 2}, ["body", "policy"], "unknown policy 'nope'"),
        ({"top_k": 0}, ["body", "top_k"], "greater than or equal to 1"),
        ({"top_k": "3", "policy": "ctr"}, ["body", "top_k"], "valid integer"),
        ({"policy": ""}, ["body", "policy"], "at least 1 character"),
    ],
)  # fmt: skip
def test_bad_policy_or_top_k_is_a_422_naming_the_field(
    client: TestClient, body: dict[str, Any], loc: list[str], message: str
) -> None:
    response = client.post("/v1/rank", json={"user_id": "u1", "item_ids": ITEMS, **body})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc
    assert message in detail["msg"]


def test_a_policy_that_does_not_fit_the_model_is_a_422_naming_what_it_lacks(
    export: Any, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    (tmp_path / "pol.yaml").write_text(
        POLICIES + "  - {name: dwell_time, kind: weighted_sum, terms: [{output: dwell}]}\n"
        "  - {name: by_brand, kind: weighted_product, terms: [{feature: brand}]}\n"
    )
    with TestClient(create_app(settings(export.models, redis_store, tmp_path))) as client:
        for name, message in (
            ("dwell_time", "policy 'dwell_time' needs output 'dwell', which model 'mmoe' lacks"),
            ("by_brand", "needs numeric feature 'brand', which model 'mmoe' has as a categorical"),
        ):
            response = client.post(
                "/v1/rank", json={"user_id": "u1", "item_ids": ITEMS, "policy": name}
            )
            assert response.status_code == 422, response.text
            detail = response.json()["detail"][0]
            assert detail["loc"] == ["body", "policy"] and message in detail["msg"]


@pytest.fixture
def shared_model(export: Any, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(export.version_dir, models / "mmoe" / "1")
    (tmp_path / "experiments.yaml").write_text(EXPERIMENTS)
    return models


def test_two_variants_share_one_model_and_differ_only_in_policy(
    export: Any,
    redis_store: tuple[str, str],
    shared_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fusion = ExperimentsFile.from_dict(_yaml(EXPERIMENTS)).experiments[0]
    users: dict[str, list[str]] = {"by_ctr": [], "by_value": []}
    for n in range(200):
        users[fusion.assign(f"u{n}")[0].name].append(f"u{n}")
    price = prices(export)
    setup = settings(  # features logged and the log rotated: ab-report reads every file
        shared_model,
        redis_store,
        tmp_path,
        experiments=tmp_path / "experiments.yaml",
        log_features=True,
        exposure_log_max_mb=0.02,
    )
    bodies: list[Any] = []
    with TestClient(create_app(setup)) as client:
        for variant, policy in (("by_ctr", "ctr"), ("by_value", "ctcvr_price")):
            for user in users[variant][:8]:
                full = rank(client, user)  # the variant's policy, every row
                top = rank(client, user, top_k=4)
                for body in (full, top):
                    assert (body["model"], body["variant"]) == ("mmoe", variant)
                    assert body["policy"] == policy
                ctr, cvr = column(full, "ctr"), column(full, "cvr")
                cost = np.array([price[item] for item in ITEMS], np.float64)
                formula = ctr if policy == "ctr" else ctr * cvr * np.sqrt(cost)
                np.testing.assert_allclose(column(full, "score"), formula, rtol=1e-5)
                best = [ITEMS[i] for i in np.argsort(-formula, kind="stable")[:4]]
                assert [row["item_id"] for row in top["scores"]] == best
                bodies.append(top)
        # the same user and candidates, each formula: different orders
        user = users["by_ctr"][0]
        by_ctr = [r["item_id"] for r in rank(client, user, top_k=4)["scores"]]
        overridden = rank(client, user, top_k=4, policy="ctcvr_price")  # the request's wins
        assert overridden["variant"] == "by_ctr" and overridden["policy"] == "ctcvr_price"
        assert [r["item_id"] for r in overridden["scores"]] != by_ctr
        sample = client.app.state.metrics.registry.get_sample_value  # type: ignore[attr-defined]
        assert sample("mtrank_rank_policy_requests_total", {"policy": "ctcvr_price"}) == 17
        assert sample("mtrank_rank_policy_requests_total", {"policy": "ctr"}) == 17

    files = sorted(tmp_path.glob("exposures.jsonl*"))
    assert len(files) > 2
    logged = [json.loads(text) for path in files for text in path.read_text().splitlines()]
    lines = {line["request_id"]: line for line in logged if line.get("kind") != "schema"}
    assert len(lines) == 2 * 8 * 2 + 2  # every request, once
    feedback = []
    for body in bodies:
        line = lines[body["request_id"]]
        assert (line["variant"], line["policy"], line["candidates"]) == (
            body["variant"], body["policy"], len(ITEMS),
        )  # fmt: skip
        assert line["item_ids"] == [row["item_id"] for row in body["scores"]]
        assert line["scores"]["score"] == [row["score"] for row in body["scores"]]
        for position, item in enumerate(line["item_ids"], 1):  # the first one is clicked
            feedback.append(
                {"request_id": body["request_id"], "item_id": item, "position": position,
                 "click": int(position == 1), "conversion": 0}
            )  # fmt: skip
    (tmp_path / "feedback.jsonl").write_text("".join(json.dumps(f) + "\n" for f in feedback))
    out = tmp_path / "report"
    code = main(
        ["ab-report", "--exposures", *map(str, files), "--feedback",
         str(tmp_path / "feedback.jsonl"), "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["exposures"] == [str(path) for path in files]
    assert report["inputs"]["exposure_lines"] == len(lines)  # schema lines skipped
    variants = report["experiments"]["fusion"]["variants"]
    assert set(variants) == {"by_ctr", "by_value"}
    for name, policy in (("by_ctr", "ctr"), ("by_value", "ctcvr_price")):
        assert variants[name]["models"] == {"mmoe": "1"}
        assert (variants[name]["policy"], variants[name]["policies"]) == (policy, {policy: 8})
        assert variants[name]["impressions"] == 8 * 4
        assert variants[name]["ctr"]["value"] == pytest.approx(0.25)
    assert "ctcvr_price" in (out / "report.html").read_text()


def test_a_variant_policy_the_model_cannot_feed_stops_the_start(
    export: Any, redis_store: tuple[str, str], shared_model: Path, tmp_path: Path
) -> None:
    (tmp_path / "pol.yaml").write_text(POLICIES.replace("feature: price", "feature: brand"))
    setup = settings(shared_model, redis_store, tmp_path, experiments=tmp_path / "experiments.yaml")
    app = create_app(setup)
    expected = r"variants\[1\]\.policy: policy 'ctcvr_price' "
    with pytest.raises(ExperimentsError, match=expected), TestClient(app):
        pass
    assert "policies[0].terms[2].feature" in str(app.state.startup_error)


def test_a_default_that_does_not_fit_a_model_stops_the_start(
    export: Any, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    pol = tmp_path / "pol.yaml"
    pol.write_text(
        POLICIES.replace("{output: cvr, weight: 1.0}", "{output: dwell}") + "default: ctcvr_price\n"
    )
    app = create_app(settings(export.models, redis_store, tmp_path))
    with (
        pytest.raises(
            PoliciesError, match=r"pol\.yaml: default: policy 'ctcvr_price' needs output 'dwell'"
        ),
        TestClient(app),
    ):
        pass


def test_a_later_model_version_must_fit_the_policies(
    export: Any, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    """The manager's admit hook checks each new version against the default and the variants'
    policies: one with an output named `score` (or lacking a policy's output or feature) is
    refused, and the version before it serves on (tests/serving/test_hot_swap.py)."""
    (tmp_path / "pol.yaml").write_text("default: blend\n" + POLICIES)
    with TestClient(create_app(settings(export.models, redis_store, tmp_path))) as client:
        manager = client.app.state.manager  # type: ignore[attr-defined]
        serving = manager.get("mmoe")
        manager.admit(serving)  # the serving version fits
        with_score = dataclasses.replace(serving, outputs=[*serving.outputs, "score"])
        with pytest.raises(ModelLoadError, match=r"policies: .*output named 'score'") as caught:
            manager.admit(with_score)
        assert caught.value.code == "FAILED_PRECONDITION"


def test_a_bad_edit_is_refused_while_the_old_policies_serve(
    export: Any, redis_store: tuple[str, str], shared_model: Path, tmp_path: Path
) -> None:
    pol = tmp_path / "pol.yaml"
    setup = settings(
        shared_model,
        redis_store,
        tmp_path,
        experiments=tmp_path / "experiments.yaml",
        api_key="sekret",
    )
    admin = {"X-API-Key": "sekret"}
    with TestClient(create_app(setup)) as client:
        before = rank(client, policy="blend", top_k=3)
        bad_edits = [
            (POLICIES.replace("kind: weighted_sum", "kind: maximum"), "policies[1].kind: "),
            (POLICIES.replace("name: ctcvr_price", "name: value"),  # a variant's policy, gone
             "experiments[0].variants[1].policy: unknown policy 'ctcvr_price'"),
        ]  # fmt: skip
        for text, message in bad_edits:
            pol.write_text(text)
            reload = client.post("/v1/admin/reload", headers=admin).json()["policies"]
            assert reload["outcome"] == "refused" and message in reload["error"]
            assert "\n" not in reload["error"]
            again = rank(client, policy="blend", top_k=3)
            assert again.pop("request_id") != before["request_id"]
            assert again == {k: v for k, v in before.items() if k != "request_id"}
            shown = client.get("/v1/policies").json()
            assert [p["name"] for p in shown["policies"]] == ["ctcvr_price", "blend"]
            assert message in shown["error"]
        pol.write_text(POLICIES.replace("bias: 0.25", "bias: 1.25"))
        assert client.post("/v1/admin/reload", headers=admin).json()["policies"] == {
            "outcome": "loaded", "error": None,
        }  # fmt: skip
        after = rank(client, policy="blend", top_k=3)
        np.testing.assert_allclose(column(after, "score"), column(before, "score") + 1.0, atol=2e-8)
        assert client.get("/v1/policies").json()["error"] is None
        sample = client.app.state.metrics.registry.get_sample_value  # type: ignore[attr-defined]
        assert sample("mtrank_policy_reloads_total", {"outcome": "refused"}) == 2
        assert sample("mtrank_policies") == 2


def test_the_policies_file_is_polled_for_edits(
    export: Any, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    setup = settings(export.models, redis_store, tmp_path, poll_interval_s=0.1)
    with TestClient(create_app(setup)) as client:
        assert (
            client.post(
                "/v1/rank", json={"user_id": "u1", "item_ids": ITEMS, "policy": "fresh"}
            ).status_code
            == 422
        )
        (tmp_path / "pol.yaml").write_text(
            POLICIES + "  - {name: fresh, kind: weighted_sum, terms: [{output: cvr}]}\n"
        )
        deadline = time.monotonic() + 30
        while "fresh" not in [p["name"] for p in client.get("/v1/policies").json()["policies"]]:
            assert time.monotonic() < deadline, "the edit was never loaded"
            time.sleep(0.05)
        body = rank(client, policy="fresh", top_k=2)
        assert column(body, "score").tolist() == column(body, "cvr").tolist()


def test_top_rows_agree_with_a_full_stable_sort_on_many_ties() -> None:
    rng = np.random.default_rng(3)
    for k in (1, 5, 17, 60):
        score = rng.integers(0, 6, size=60).astype(np.float64)  # many equal scores
        assert top_rows(score, k).tolist() == np.argsort(-score, kind="stable")[:k].tolist()
