"""Online experiments: the experiments file, sticky salted bucketing, variants in `/v1/rank`,
shadow models (scored and logged, never returned) and the exposure log (complete after a clean
shutdown, written off the request path).

The service tests serve three names of the session export's model (`mmoe`, `twin`, `shade`:
copies of one SavedModel) from the session Redis, so routing, not modelling, is under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.experiments import BUCKETS, ExperimentsError, ExperimentsFile, bucket
from serving.exposure import ExposureLog
from serving.settings import Settings
from tests.serving.conftest import logged_service_settings

ROOT = Path(__file__).resolve().parents[2]
ITEMS = ["i3", "i1", "i4", "i59"]
CONTEXT = {"device": "android", "hour": "13"}

EXPERIMENTS = """\
experiments:
  - name: gates
    salt: gates-2026-11
    variants:
      - {name: control,   model: mmoe, weight: 50}
      - {name: treatment, model: twin, weight: 50}
    shadow: [shade]
  - name: solo
    salt: solo-1
    variants:
      - {name: only, model: twin, weight: 100}
"""


def experiment(weights: list[float], salt: str = "s1") -> Any:
    variants = [{"name": f"v{k}", "model": "m", "weight": w} for k, w in enumerate(weights)]
    raw = {"experiments": [{"name": "e", "salt": salt, "variants": variants}]}
    return ExperimentsFile.from_dict(raw).experiments[0]


# ---- bucketing --------------------------------------------------------------------------------


def test_bucket_is_planouts_salted_sha1_pinned() -> None:
    """sha1("gates-2026-11.u1") = ef12d00272a52fc...: the first 15 hex digits mod 10000."""
    assert int("ef12d00272a52fc", 16) % BUCKETS == 4300
    assert bucket("gates-2026-11", "u1") == 4300
    assert bucket("gates-2026-11", "u2") == 66


def test_variant_shares_within_one_point_of_their_weights_over_20000_users() -> None:
    exp = experiment([50, 30, 15, 5])
    counts = Counter(exp.assign(f"u{n}")[0].name for n in range(20_000))
    for k, weight in enumerate([50, 30, 15, 5]):
        share = 100.0 * counts[f"v{k}"] / 20_000
        assert abs(share - weight) < 1.0, (k, share, weight)


def test_the_same_user_always_gets_the_same_variant() -> None:
    first = experiment([50, 50])
    again = experiment([50, 50])  # a fresh parse of the same file
    for n in range(2000):
        user = f"u{n}"
        assert first.assign(user) == first.assign(user) == again.assign(user)


def test_a_new_salt_reassigns_about_half_the_users_of_a_50_50_split() -> None:
    old, new = experiment([50, 50], salt="s1"), experiment([50, 50], salt="s2")
    users = [f"u{n}" for n in range(20_000)]
    moved = sum(old.assign(u)[0].name != new.assign(u)[0].name for u in users)
    assert 0.45 < moved / len(users) < 0.55  # independent of the old assignment


def test_growing_a_variant_only_moves_users_into_it() -> None:
    """Buckets are fixed ranges in file order: 10/90 -> 20/80 moves users from v1 to v0 only."""
    small, large = experiment([10, 90]), experiment([20, 80])
    for n in range(5000):
        before, after = small.assign(f"u{n}")[0].name, large.assign(f"u{n}")[0].name
        assert before == after or (before, after) == ("v1", "v0")


# ---- the file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (EXPERIMENTS.replace("weight: 50}\n    shadow", "weight: 40}\n    shadow"),
         "experiments[0].variants: weights sum to 90, not 100 (experiment 'gates')"),
        (EXPERIMENTS.replace("model: mmoe, weight: 50", "model: mmoe, weight: 0"),
         "experiments[0].variants[0].weight: Input should be greater than 0"),
        (EXPERIMENTS.replace("name: treatment", "name: control"),
         "experiments[0].variants: duplicate variant name 'control'"),
        (EXPERIMENTS.replace("name: solo", "name: gates"),
         "experiments: duplicate experiment name 'gates'"),
        (EXPERIMENTS.replace("shadow: [shade]", "shadow: [mmoe]"),
         "experiments[0].shadow: model 'mmoe' already serves variant 'control'"),
        (EXPERIMENTS.replace("    salt: solo-1\n", ""),
         "experiments[1].salt: required key is missing (experiment 'solo')"),
        (EXPERIMENTS.replace("shadow:", "shadows:"),
         "experiments[0].shadows: unknown key (experiment 'gates')"),
        (EXPERIMENTS + "default: nope\n", "default: no experiment named 'nope'"),
        (EXPERIMENTS.replace("variants:\n      - {name: only", "variants:\n      - {name: [only"),
         ".yaml:11: not valid YAML"),
        ("- just a list\n", "expected a mapping with an 'experiments' list"),
    ],
)  # fmt: skip
def test_experiments_file_errors_name_the_key(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentsError) as caught:
        ExperimentsFile.load(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_models_must_be_served() -> None:
    experiments = ExperimentsFile.from_dict(_yaml(EXPERIMENTS))
    experiments.check_models({"mmoe", "twin", "shade"})
    with pytest.raises(ExperimentsError, match=r"experiments\[0\]\.variants\[1\]\.model: .*'twin'"):
        experiments.check_models({"mmoe", "shade"})
    with pytest.raises(ExperimentsError, match=r"experiments\[0\]\.shadow\[0\]: model 'shade'"):
        experiments.check_models({"mmoe", "twin"})


def _yaml(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


# ---- the service ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ab_models(export: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MODELS with mmoe/1, twin/1 and shade/1: one SavedModel under three names."""
    models = tmp_path_factory.mktemp("ab") / "models"
    for name in ("mmoe", "twin", "shade"):
        shutil.copytree(export.version_dir, models / name / "1")
    return models


def ab_settings(models: Path, store: tuple[str, str], tmp_path: Path, **extra: Any) -> Settings:
    experiments = tmp_path / "experiments.yaml"
    if not experiments.exists():
        experiments.write_text(EXPERIMENTS)
    given = {"experiments": experiments, **extra}
    settings: Settings = logged_service_settings(models, store, tmp_path, **given)
    return settings


@pytest.fixture
def ab_client(
    ab_models: Path, redis_store: tuple[str, str], tmp_path: Path
) -> Iterator[tuple[TestClient, Path]]:
    settings = ab_settings(ab_models, redis_store, tmp_path)
    with TestClient(create_app(settings)) as client:
        yield client, tmp_path / "exposures.jsonl"


def rank(client: TestClient, user: str, **body: Any) -> Any:
    response = client.post(
        "/v1/rank", json={"user_id": user, "item_ids": ITEMS, "context": CONTEXT, **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rank_names_the_variant_its_users_bucket_picks(ab_client: tuple[TestClient, Path]) -> None:
    client, _ = ab_client
    gates = ExperimentsFile.from_dict(_yaml(EXPERIMENTS)).experiments[0]
    seen = set()
    for n in range(40):
        user = f"u{n}"
        expected, _ = gates.assign(user)
        body = rank(client, user)  # no model, no experiment: the first experiment
        assert (body["experiment"], body["variant"]) == ("gates", expected.name)
        assert body["model"] == expected.model
        assert rank(client, user)["variant"] == expected.name  # sticky
        seen.add(body["variant"])
    assert seen == {"control", "treatment"}
    solo = rank(client, "u1", experiment="solo")
    assert (solo["experiment"], solo["variant"], solo["model"]) == ("solo", "only", "twin")


def test_a_named_model_is_outside_any_experiment(ab_client: tuple[TestClient, Path]) -> None:
    client, _ = ab_client
    body = rank(client, "u1", model="shade")  # a shadow can still be asked for by name
    assert (body["model"], body["variant"], body["experiment"]) == ("shade", None, None)


def test_unknown_experiment_is_404_and_model_with_experiment_422(
    ab_client: tuple[TestClient, Path],
) -> None:
    client, _ = ab_client
    body = {"user_id": "u1", "item_ids": ITEMS}
    response = client.post("/v1/rank", json={**body, "experiment": "nope"})
    assert response.status_code == 404 and "nope" in response.text
    response = client.post("/v1/rank", json={**body, "experiment": "gates", "model": "mmoe"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "experiment"]


def test_shadow_models_are_never_returned_but_logged(
    ab_models: Path, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    settings = ab_settings(ab_models, redis_store, tmp_path)
    app = create_app(settings)
    with TestClient(app) as client:
        bodies = [rank(client, f"u{n}") for n in range(30)]
    assert {b["model"] for b in bodies} == {"mmoe", "twin"}  # never "shade"
    # scored after each response: counted by the time the shutdown has waited for them
    sample = app.state.metrics.registry.get_sample_value
    labels = {"experiment": "gates", "model": "shade", "outcome": "scored"}
    assert sample("mtrank_shadow_requests_total", labels) == 30
    assert (
        sum(
            sample("mtrank_experiment_requests_total", {"experiment": "gates", "variant": v}) or 0
            for v in ("control", "treatment")
        )
        == 30
    )
    lines = {line["request_id"]: line for line in read_log(settings.exposure_log)}  # type: ignore[arg-type]
    assert len(lines) == 30
    for n, body in enumerate(bodies):
        line = lines[body["request_id"]]
        assert (line["experiment"], line["variant"], line["model"]) == (
            "gates", body["variant"], body["model"],
        )  # fmt: skip
        assert (line["user_id"], line["item_ids"]) == (f"u{n}", ITEMS)
        served = {task: [s[task] for s in body["scores"]] for task in ("ctr", "cvr", "ctcvr")}
        assert line["scores"] == served
        shadow = line["shadow"]["shade"]
        assert shadow["version"] == "1"
        # the same SavedModel under another name: the same scores for the same features
        assert shadow["scores"]["ctr"] == pytest.approx(served["ctr"], abs=1e-6)


def test_exposure_log_is_written_off_the_request_path_and_complete_after_shutdown(
    ab_models: Path,
    redis_store: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer thread is held back until every request has been answered: requests never
    wait for it, and the clean shutdown still writes all of them."""
    release = threading.Event()
    write = ExposureLog._write

    def held_back(self: ExposureLog, exposures: list[Any]) -> None:
        release.wait(60)
        write(self, exposures)

    monkeypatch.setattr(ExposureLog, "_write", held_back)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENTS.replace("    shadow: [shade]\n", ""))
    settings = ab_settings(ab_models, redis_store, tmp_path)
    n = 200
    with TestClient(create_app(settings)) as client:
        ids = [rank(client, f"u{k % 50}", model=None)["request_id"] for k in range(n)]
        ids.append(rank(client, "u7", model="mmoe")["request_id"])
        assert settings.exposure_log is not None
        assert settings.exposure_log.read_text() == ""  # all answered, nothing written yet
        release.set()
    lines = read_log(settings.exposure_log)
    assert [line["request_id"] for line in lines] == ids  # every one, in order
    assert lines[-1]["variant"] is None and lines[-1]["experiment"] is None
    keys = {
        "request_id", "time", "user_id", "experiment", "variant", "bucket", "model", "version",
        "policy", "candidates", "item_ids", "context", "scores", "shadow", "degraded",
    }  # fmt: skip
    assert set(lines[0]) == keys
    assert (lines[0]["policy"], lines[0]["candidates"]) == (None, len(ITEMS))
    assert lines[0]["context"] == {**CONTEXT, "position": 1.0}
    assert lines[0]["bucket"] == bucket("gates-2026-11", lines[0]["user_id"])


def test_a_model_that_does_not_load_stops_the_start(
    ab_models: Path, redis_store: tuple[str, str], tmp_path: Path
) -> None:
    (tmp_path / "experiments.yaml").write_text(EXPERIMENTS.replace("[shade]", "[ghost]"))
    settings = ab_settings(ab_models, redis_store, tmp_path)
    app = create_app(settings)
    expected = r"experiments\[0\]\.shadow\[0\]: model 'ghost'"
    with pytest.raises(ExperimentsError, match=expected), TestClient(app):
        pass
    assert isinstance(app.state.startup_error, ExperimentsError)


def test_serve_with_a_bad_experiments_file_is_a_one_line_error(
    ab_models: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(EXPERIMENTS.replace("model: twin, weight: 50", "model: ple, weight: 50"))
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "serve", "--models", str(ab_models),
         "--experiments", str(path), "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mtrank serve: error: ")
    assert "experiments[0].variants[1].model: model 'ple' is not served" in lines[0]
