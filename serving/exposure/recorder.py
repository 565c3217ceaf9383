"""Scored `/v1/rank` requests to exposures, with their shadow models scored off the request path.

The exposure keeps references to the request's arrays (every candidate's scores, the returned
rows' `order`, and with `log_features` the batch the serving model was called with); the writer
thread picks the returned rows and encodes them. Shadow models score every candidate, and their
columns are cut to the returned rows the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from serving.exposure.entry import Exposure
from serving.exposure.writer import ExposureLog
from serving.metrics import Metrics
from serving.model_call import ModelCalls
from serving.policies import SCORE
from serving.rank_result import RankResult
from serving.servable import Servable

log = logging.getLogger("mtrank.serving")

MAX_PENDING_SHADOWS = 256


class ExposureRecorder:
    """Turns scored requests into exposures: logs them, and scores shadow models off the path."""

    def __init__(
        self,
        log: ExposureLog | None,
        model_calls: ModelCalls,
        metrics: Metrics,
        max_pending_shadows: int = MAX_PENDING_SHADOWS,
        log_features: bool = False,
    ) -> None:
        self.log = log
        self.model_calls = model_calls
        self.metrics = metrics
        self.log_features = log_features
        self.max_pending_shadows = max_pending_shadows
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, result: RankResult) -> None:
        """Log the request (now, or once its shadows are scored); never waits for either."""
        route = result.route
        if route.experiment is not None:
            self.metrics.assignments.labels(route.experiment, route.variant or "").inc()
        if self.log is None and not route.shadows:
            return
        scores = result.scores
        if result.score is not None:
            scores = {**scores, SCORE: result.score}
        features = self.log_features and self.log is not None
        exposure = Exposure(
            request_id=result.request_id,
            time=time.time(),
            user_id=result.user_id,
            experiment=route.experiment,
            variant=route.variant,
            bucket=route.bucket,
            model=result.servable.name,
            version=result.servable.model_version,
            item_ids=result.item_ids,
            context=result.context,
            scores=scores,
            degraded=result.degraded,
            policy=None if result.policy is None else result.policy.name,
            order=result.order,
            batch=result.batch if features else None,
            schema=result.servable.schema if features else None,
        )
        if not route.shadows:
            self._log(exposure)
            return
        if len(self._tasks) >= self.max_pending_shadows:
            for shadow in route.shadows:
                self.metrics.shadows.labels(route.experiment or "", shadow.name, "skipped").inc()
            exposure.shadow_skipped = True
            self._log(exposure)
            return
        task = asyncio.get_running_loop().create_task(
            self._score_shadows(exposure, result), name=f"mtrank-shadow-{result.request_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score_shadows(self, exposure: Exposure, result: RankResult) -> None:
        shadows = result.route.shadows
        entries = await asyncio.gather(*(self._score_one(shadow, result) for shadow in shadows))
        for shadow, entry in zip(shadows, entries, strict=True):
            exposure.shadow[shadow.name] = entry
            outcome = "failed" if "error" in entry else "scored"
            self.metrics.shadows.labels(result.route.experiment or "", shadow.name, outcome).inc()
        self._log(exposure)

    async def _score_one(self, shadow: Servable, result: RankResult) -> dict[str, Any]:
        """The shadow's scores of the request's candidates (its own schema types the context),
        or the error that stopped it."""
        entry: dict[str, Any] = {"version": shadow.model_version}
        try:
            context, _ = shadow.batcher.context(result.raw_context)
            entry["scores"] = await self.model_calls.score_candidates(shadow, context, result.found)
        except Exception as err:  # a shadow must never hurt the request or the log
            log.warning("shadow model %s failed: %s", shadow.name, err)
            entry["error"] = str(err)[:300]
        return entry

    def _log(self, exposure: Exposure) -> None:
        if self.log is not None:
            self.log.put(exposure)

    @property
    def pending_shadows(self) -> int:
        return len(self._tasks)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Finish the shadow tasks (up to `timeout`), then drain and close the log."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d shadow scorings unfinished at shutdown: not logged", len(late))
        if self.log is not None:
            await asyncio.to_thread(self.log.close)
