"""`/v1/rank` end to end: one `Ranker.rank` call routes, fetches, batches, scores, ranks and
records a request and returns its `RankResult`; the route only writes the response.

    route    which model (experiment variant) serves the user      serving.model_router
    policy   the ranking policy: the request's, the variant's, the file's default
    fetch    the user's and candidates' stored features, one trip  serving.feature_source
    score    context checked, one batch, one model call            serving.batcher, .model_call
             (with the batches of other requests that wait for the same busy model)
    rank     the policy's fused score; with top_k the k best rows  serving.policies
    record   metrics; the exposure (and shadow models), not waited  serving.exposure

The policy is chosen before the store is read, so a bad `policy` or `top_k` costs no lookup:
the request's `policy`, else the experiment variant's, else the policies file's `default`,
else none (the response is today's: every candidate in request order, no `score`). `top_k`
needs a policy (422 on `body.top_k` without one); a policy that is unknown or does not fit the
serving model is a 422 on `body.policy` naming the missing output or feature.
"""

from __future__ import annotations

from typing import Any

from serving.errors import InvalidInput, TooManyItems
from serving.exposure import ExposureRecorder
from serving.feature_source import FeatureSource
from serving.metrics import Metrics
from serving.model_call import ModelCalls
from serving.model_router import Route, Router
from serving.policies import Policy, PolicyWatcher, top_rows
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
        model_calls: ModelCalls,
        exposures: ExposureRecorder,
        policies: PolicyWatcher | None = None,
    ) -> None:
        self.max_items = max_items
        self.router = router
        self.features = features
        self.metrics = metrics
        self.model_calls = model_calls
        self.exposures = exposures
        self.policies = policies or PolicyWatcher(None)

    async def rank(self, body: RankRequest, state: Any) -> RankResult:
        """Scores for every `item_ids` entry (in order, or the `top_k` best by the policy);
        unknown users and items get defaults.

        `state` is the request's state (`request.state`): its `request_id` (set by the
        middleware) names the request, and it is labelled with the model, version, variant,
        policy and candidate count as soon as the route is known (so a 422 on the context is
        logged with them), then with `degraded`. The exposure is handed off without waiting.
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
        policy = self.choose_policy(body, route)
        state.policy = None if policy is None else policy.name
        context, missing_context = servable.batcher.context(body.context)  # 422 before the fetch
        found = await self.features.fetch(body.user_id, body.item_ids)
        batch = servable.batcher.rank_batch(found, context)
        scores = await self.model_calls.scores(servable, batch)
        score = order = None
        if policy is not None:
            score = policy.score(scores, batch)
            if body.top_k is not None:
                order = top_rows(score, body.top_k)
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
            batch=batch,
            policy=policy,
            score=score,
            order=order,
        )
        self._count(result)
        state.degraded = result.degraded
        self.exposures.record(result)
        return result

    def choose_policy(self, body: RankRequest, route: Route) -> Policy | None:
        """The request's policy, else the variant's, else the default, else None; 422 naming
        `body.policy` if it is unknown or does not fit the model, `body.top_k` if none applies."""
        policies, servable = self.policies.current, route.servable
        name, origin = body.policy, ""
        if name is None and route.policy is not None:
            name, origin = route.policy, f"variant {route.variant!r}'s "
        elif name is None and policies.default is not None:
            name, origin = policies.default, "the default "
        if name is None:
            if body.top_k is not None:
                raise InvalidInput(
                    ("body", "top_k"),
                    f"top_k ranks by a policy's score, and none applies: name one in 'policy' "
                    f"(a policy of the policies file, or an output of model {servable.name!r}: "
                    f"{servable.outputs})",
                )
            return None
        policy = policies.find(name, servable.outputs)
        if policy is None:
            raise InvalidInput(
                ("body", "policy"),
                f"unknown {origin}policy {name!r} (policies: {sorted(policies.policies)}; "
                f"outputs of model {servable.name!r}: {servable.outputs})",
            )
        problem = policy.problem(servable)
        if problem is not None:
            raise InvalidInput(("body", "policy"), f"{origin}{problem[1]}")
        return policy

    def _count(self, result: RankResult) -> None:
        metrics, found = self.metrics, result.found
        metrics.candidates.observe(len(result.item_ids))
        metrics.missing.labels("user").inc(found.missing_user)
        metrics.missing.labels("item").inc(len(found.absent_items))
        metrics.missing.labels("context").inc(len(result.missing_context))
        metrics.policy_requests.labels("" if result.policy is None else result.policy.name).inc()
        if found.degraded:
            metrics.degraded.inc()
