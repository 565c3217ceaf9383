"""Exports written before the typed export contract still load and serve the same scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ranker.contract import ExportMetadata
from serving.app import create_app
from serving.settings import Settings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "export_2026_12_05"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE / "shared_bottom", tmp_path / "models" / "shared_bottom")
    return tmp_path / "models"


def test_an_export_of_the_previous_format_serves_the_scores_it_gave_then(models: Path) -> None:
    expected: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
    with TestClient(create_app(Settings(models_dir=models, poll_interval_s=0))) as client:
        response = client.post(
            "/v1/models/shared_bottom:predict", json={"instances": expected["instances"]}
        )
        status = client.get("/v1/models/shared_bottom").json()
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(expected["instances"]) == 8
    for output, scores in expected["scores"].items():
        served = [row[output] for row in predictions]
        np.testing.assert_allclose(served, scores, atol=1e-6)
    # the scores differ from row to row, so matching them is not a coincidence of constants
    assert np.ptp(expected["scores"]["ctr"]) > 0.01
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_the_old_metadata_parses_and_writes_back_the_same_json() -> None:
    path = FIXTURE / "shared_bottom" / "1" / "metadata.json"
    metadata = ExportMetadata.read(path.parent)
    assert json.loads(metadata.to_json()) == json.loads(path.read_text())
    assert metadata.outputs == ["ctr", "cvr", "ctcvr"] and metadata.best_epoch == 1
