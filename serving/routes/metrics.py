"""`GET /metrics`: the Prometheus text exposition format of the app's metrics (with
`--workers N`, of all the workers: `serving.metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import MetricsDep

router = APIRouter(tags=["health"])


@router.get("/metrics")
async def metrics(collectors: MetricsDep) -> Response:
    return Response(collectors.exposition(), media_type=CONTENT_TYPE_LATEST)
