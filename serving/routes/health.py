"""`GET /livez` (the process answers) and `GET /readyz` (models warmed; store up or degraded).

/livez also says which process answered (extensions): `pid`, and `worker`, its number K under
`mtrank serve --workers N` (whose exposure log is FILE.wK), null in a single process.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serving.deps import FeaturesDep, ManagerDep
from serving.schemas import ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez(request: Request) -> dict[str, str | int | None]:
    worker = request.app.state.worker
    return {"status": "ok", "pid": os.getpid(), "worker": None if worker is None else worker.index}


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
