"""What routes get from the app, as `Annotated[..., Depends(...)]` aliases.

Everything lives on `app.state`, put there by the lifespan (`serving.app`): the settings, the
model manager, the feature source, the metrics, the model-call thread pool, the ranking
policies and the `Ranker` that runs `/v1/rank`. The dependencies are `async def` although they only read an attribute:
FastAPI runs a plain `def` dependency in its worker thread pool, and those hops (one per
dependency and request; `/v1/rank` had eight) cost more than the rest of the request's parsing.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from serving.errors import Forbidden, Unauthorized
from serving.feature_source import FeatureSource
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.model_call import ModelCalls
from serving.policies import PolicyWatcher
from serving.ranking import Ranker
from serving.settings import Settings

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_manager(request: Request) -> ModelManager:
    return request.app.state.manager  # type: ignore[no-any-return]


async def get_ranker(request: Request) -> Ranker:
    return request.app.state.ranker  # type: ignore[no-any-return]


async def get_features(request: Request) -> FeatureSource:
    return request.app.state.features  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


async def get_model_calls(request: Request) -> ModelCalls:
    return request.app.state.model_calls  # type: ignore[no-any-return]


async def get_policies(request: Request) -> PolicyWatcher:
    return request.app.state.policies  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
RankerDep = Annotated[Ranker, Depends(get_ranker)]
FeaturesDep = Annotated[FeatureSource, Depends(get_features)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelCallsDep = Annotated[ModelCalls, Depends(get_model_calls)]
PoliciesDep = Annotated[PolicyWatcher, Depends(get_policies)]


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """Admin endpoints: the API key when one is configured, else loopback clients only."""
    if settings.api_key is None:
        host = request.client.host if request.client else ""
        if host not in _LOOPBACK:
            raise Forbidden(
                "admin endpoints answer loopback clients only unless MTRANK_API_KEY is set"
            )
        return
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token if scheme.lower() == "bearer" else None
    expected = settings.api_key.get_secret_value()
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("admin endpoints need the API key (X-API-Key or Authorization: Bearer)")


AdminDep = Annotated[None, Depends(require_admin)]
