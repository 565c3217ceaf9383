"""Model status (`GET /v1/models`, TF Serving's `GET /v1/models/{name}`) and admin actions.

Admin endpoints (API key, or loopback only when none is set):
`POST /v1/admin/reload` retries refused versions and looks for new ones now, and reloads the
policies file (whether or not it changed);
`PUT /v1/admin/models/{name}/pin {"version": V}` serves V until
`DELETE /v1/admin/models/{name}/pin` returns to the latest version.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from serving.deps import AdminDep, ManagerDep, PoliciesDep
from serving.errors import NotFound
from serving.manager import ModelManager
from serving.schemas import ModelsResponse, ModelStatusResponse, PinRequest, VersionStatusBody

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelsResponse)
async def list_models(manager: ManagerDep) -> dict[str, Any]:
    return {"models": [_summary(manager, name) for name in manager.names]}


@router.get("/v1/models/{name}", response_model=ModelStatusResponse)
async def model_status(name: str, manager: ManagerDep) -> dict[str, Any]:
    if not manager.known(name):
        raise NotFound(f"unknown model {name!r} (models: {manager.names})")
    return {"model_version_status": [s.to_json() for s in manager.status(name)]}


@router.get("/v1/models/{name}/versions/{version}", response_model=ModelStatusResponse)
async def version_status(name: str, version: str, manager: ManagerDep) -> dict[str, Any]:
    statuses = [s for s in manager.status(name) if str(s.version) == version]
    if not statuses:
        raise NotFound(f"model {name!r} has no version {version!r}")
    return {"model_version_status": [s.to_json() for s in statuses]}


@router.post("/v1/admin/reload")
async def reload(manager: ManagerDep, policies: PoliciesDep, _: AdminDep) -> dict[str, Any]:
    """Forget refused versions and load what should serve now, reload the policies file; lists
    what happened (a refused policies edit: `outcome` refused and its `error`)."""
    manager.forget_failures()
    events = await asyncio.to_thread(manager.refresh)
    outcome = await asyncio.to_thread(policies.refresh, True)
    return {
        "events": [{"model": m, "version": str(v), "outcome": o} for m, v, o in events],
        "models": [_summary(manager, name) for name in manager.names],
        "policies": {"outcome": outcome, "error": policies.error},
    }


@router.put("/v1/admin/models/{name}/pin", response_model=VersionStatusBody)
async def pin(name: str, body: PinRequest, manager: ManagerDep, _: AdminDep) -> dict[str, Any]:
    if not manager.known(name):
        raise NotFound(f"unknown model {name!r} (models: {manager.names})")
    servable = await asyncio.to_thread(manager.pin, name, body.version)
    return _version(manager, name, servable.version)


@router.delete("/v1/admin/models/{name}/pin", response_model=VersionStatusBody)
async def unpin(name: str, manager: ManagerDep, _: AdminDep) -> dict[str, Any]:
    if not manager.known(name):
        raise NotFound(f"unknown model {name!r} (models: {manager.names})")
    await asyncio.to_thread(manager.unpin, name)
    servable = manager.get(name)
    if servable is None:
        raise NotFound(f"model {name!r} has no serving version")
    return _version(manager, name, servable.version)


def _version(manager: ModelManager, name: str, version: int) -> dict[str, Any]:
    return next(s.to_json() for s in manager.status(name) if s.version == version)


def _summary(manager: ModelManager, name: str) -> dict[str, Any]:
    servable = manager.get(name)
    assert servable is not None
    return {
        "name": name,
        "version": servable.model_version,
        "state": "AVAILABLE",
        "pinned": manager.pinned(name),
        "outputs": servable.outputs,
        "created": servable.metadata.created,
        "path": str(servable.path),
    }
