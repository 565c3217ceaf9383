"""`GET /livez` (the process answers) and `GET /readyz` (models warmed; store up or degraded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.deps import FeaturesDep, ManagerDep
from serving.schemas import ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse)
async def readyz(manager: ManagerDep, features: FeaturesDep) -> JSONResponse:
    """200 once every model has a warmed version (503 before); says whether the store answers.

    A store that is down does not make the service unready: it answers in degraded mode
    (`"degraded": true`), scoring with default features.
    """
    models = {}
    for name in manager.names:
        servable = manager.get(name)
        if servable is not None:
            models[name] = servable.model_version
    store = await features.state()
    ready = manager.ready
    body = {"ready": ready, "models": models, "store": store, "degraded": store != "ok"}
    return JSONResponse(body, status_code=200 if ready else 503)
