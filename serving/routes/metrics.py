"""`GET /metrics`: the app's Prometheus registry in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import MetricsDep

router = APIRouter(tags=["health"])


@router.get("/metrics")
async def metrics(collectors: MetricsDep) -> Response:
    return Response(generate_latest(collectors.registry), media_type=CONTENT_TYPE_LATEST)
