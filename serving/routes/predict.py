"""TF Serving's REST predict: `POST /v1/models/{name}[/versions/{v}]:predict` on raw features.

No feature store: each instance carries the model's raw features (absent ones get their
default), so the scores are those `/v1/rank` gives for the same values.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.deps import ManagerDep, ModelCallsDep, SettingsDep
from serving.errors import InvalidInput, NotFound, TooManyItems
from serving.model_router import serving_version
from serving.schemas import PredictRequest, PredictResponse
from serving.score_json import scores_json, with_scores

router = APIRouter(tags=["tf-serving"])


@router.post("/v1/models/{name}:predict", response_model=PredictResponse)
async def predict_latest(
    name: str,
    body: PredictRequest,
    request: Request,
    settings: SettingsDep,
    manager: ManagerDep,
    model_calls: ModelCallsDep,
) -> Response:
    return await _predict(name, None, body, request, settings, manager, model_calls)


@router.post("/v1/models/{name}/versions/{version}:predict", response_model=PredictResponse)
async def predict_version(
    name: str,
    version: str,
    body: PredictRequest,
    request: Request,
    settings: SettingsDep,
    manager: ManagerDep,
    model_calls: ModelCallsDep,
) -> Response:
    if not version.isdigit() or int(version) < 1:
        raise NotFound(f"no version {version!r}: versions are positive integers")
    return await _predict(name, int(version), body, request, settings, manager, model_calls)


async def _predict(
    name: str,
    version: int | None,
    body: PredictRequest,
    request: Request,
    settings: SettingsDep,
    manager: ManagerDep,
    model_calls: ModelCallsDep,
) -> Response:
    servable = serving_version(manager, name, version)
    request.state.model, request.state.version = servable.name, servable.model_version
    n = len(body.instances)
    request.state.items = n
    if n > settings.max_items:
        raise TooManyItems(
            ("body", "instances"), f"at most {settings.max_items} instances, got {n}", "too_long"
        )
    signature = servable.metadata.signature
    if body.signature_name not in (None, signature):
        raise InvalidInput(
            ("body", "signature_name"),
            f"unknown signature {body.signature_name!r} (this model serves {signature!r})",
        )
    batch = servable.batcher.instances_batch(body.instances)
    scores = await model_calls.scores(servable, batch)
    rows = scores_json(servable.outputs, scores)
    return Response(with_scores({}, "predictions", rows), media_type="application/json")
