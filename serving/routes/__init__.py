"""The HTTP routes, one small module per area; `ROUTERS` is what `create_app` includes."""

from __future__ import annotations

from serving.routes import health, metrics, models, policies, predict, rank

ROUTERS = [
    rank.router,
    predict.router,
    models.router,
    policies.router,
    health.router,
    metrics.router,
]
