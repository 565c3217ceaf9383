"""`POST /v1/rank`: score a user's candidates with features from the online store."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.deps import ExecutorDep, FeaturesDep, MetricsDep, RouterDep, SettingsDep
from serving.errors import TooManyItems
from serving.exposure import ExposuresDep
from serving.schemas import RankRequest, RankResponse
from serving.scoring import run_model, scores_json, with_scores

router = APIRouter(tags=["ranking"])


@router.post("/v1/rank", response_model=RankResponse)
async def rank(
    body: RankRequest,
    request: Request,
    settings: SettingsDep,
    routes: RouterDep,
    features: FeaturesDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
    exposures: ExposuresDep,
) -> Response:
    """Scores for every `item_ids` entry, in order; unknown users/items are scored with defaults.

    Without `model`, the experiment (the one named, else the default) picks the variant by the
    user's bucket; the exposure (and any shadow scoring) is handed off without waiting."""
    n = len(body.item_ids)
    if n > settings.max_items:
        raise TooManyItems(
            ("body", "item_ids"), f"at most {settings.max_items} candidates, got {n}", "too_long"
        )
    route = routes.route(user_id=body.user_id, model=body.model, experiment=body.experiment)
    servable = route.servable
    state = request.state
    state.model, state.version, state.variant, state.items = (
        servable.name,
        servable.model_version,
        route.variant,
        n,
    )
    context, missing_context = servable.batcher.context(body.context)
    found = await features.fetch(body.user_id, body.item_ids)
    batch = servable.batcher.rank_batch(found, context)
    scores = await run_model(servable, batch, executor, metrics)

    missing_items = found.missing_items
    metrics.candidates.observe(n)
    metrics.missing.labels("user").inc(found.missing_user)
    metrics.missing.labels("item").inc(len(missing_items))
    metrics.missing.labels("context").inc(len(missing_context))
    if found.degraded:
        metrics.degraded.inc()
    state.degraded = found.degraded
    exposures.record(
        route,
        request_id=state.request_id,
        user_id=body.user_id,
        item_ids=body.item_ids,
        context=context,
        raw_context=body.context,
        found=found,
        scores=scores,
        degraded=found.degraded,
    )
    head = {
        "request_id": state.request_id,
        "model": servable.name,
        "version": servable.model_version,
        "variant": route.variant,
        "experiment": route.experiment,
        "missing": {"user": found.missing_user, "items": missing_items, "context": missing_context},
        "degraded": found.degraded,
    }
    rows = scores_json(servable.outputs, scores, body.item_ids)
    return Response(with_scores(head, "scores", rows), media_type="application/json")
