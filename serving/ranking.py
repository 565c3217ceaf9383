"""`/v1/rank` end to end: one `Ranker.rank` call routes, fetches, batches, scores and records a
request and returns its `RankResult`; the route only writes the response.

    route    which model (experiment variant) serves the user      serving.model_router
    fetch    the user's and candidates' stored features, one trip  serving.feature_source
    score    context checked, one batch, one model call            serving.batcher, .model_call
    record   metrics; the exposure (and shadow models), not waited  serving.exposure
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving.errors import TooManyItems
from serving.exposure import ExposureRecorder
from serving.feature_source import FeatureSource
from serving.metrics import Metrics
from serving.model_call import score_candidates
from serving.model_router import Router
from serving.rank_result import RankResult
from serving.schemas import RankRequest


class Ranker:
    """Owns a `/v1/rank` request; one per app, built by the lifespan from the app's parts."""

    def __init__(
        self,
        max_items: int,
        router: Router,
        features: FeatureSource,
        metrics: Metrics,
        executor: ThreadPoolExecutor,
        exposures: ExposureRecorder,
    ) -> None:
        self.max_items = max_items
        self.router = router
        self.features = features
        self.metrics = metrics
        self.executor = executor
        self.exposures = exposures

    async def rank(self, body: RankRequest, state: Any) -> RankResult:
        """Scores for every `item_ids` entry, in order; unknown users and items get defaults.

        `state` is the request's state (`request.state`): its `request_id` (set by the
        middleware) names the request, and it is labelled with the model, version, variant and
        candidate count as soon as the route is known (so a 422 on the context is logged with
        them), then with `degraded`. The exposure is handed off without waiting.
        """
        n = len(body.item_ids)
        if n > self.max_items:
            raise TooManyItems(
                ("body", "item_ids"), f"at most {self.max_items} candidates, got {n}", "too_long"
            )
        route = self.router.route(
            user_id=body.user_id, model=body.model, experiment=body.experiment
        )
        servable = route.servable
        state.model, state.version, state.variant, state.items = (
            servable.name,
            servable.model_version,
            route.variant,
            n,
        )
        context, missing_context = servable.batcher.context(body.context)  # 422 before the fetch
        found = await self.features.fetch(body.user_id, body.item_ids)
        scores = await score_candidates(servable, context, found, self.executor, self.metrics)
        result = RankResult(
            request_id=state.request_id,
            user_id=body.user_id,
            item_ids=body.item_ids,
            raw_context=body.context,
            route=route,
            found=found,
            context=context,
            missing_context=missing_context,
            scores=scores,
        )
        self._count(result)
        state.degraded = result.degraded
        self.exposures.record(result)
        return result

    def _count(self, result: RankResult) -> None:
        metrics, found = self.metrics, result.found
        metrics.candidates.observe(len(result.item_ids))
        metrics.missing.labels("user").inc(found.missing_user)
        metrics.missing.labels("item").inc(len(found.absent_items))
        metrics.missing.labels("context").inc(len(result.missing_context))
        if found.degraded:
            metrics.degraded.inc()
