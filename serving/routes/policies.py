"""`GET /v1/policies` (an extension): the ranking policies serving now (serving.policies).

`{"file", "loaded_at", "default", "policies": [{name, kind, terms, ...}], "error"}`: `error` is
the last refused edit of the file (None once a good edit loads), while the policies shown go on
serving. The implicit one-output policies of each model are not listed (`GET /v1/models` lists
the outputs).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.deps import PoliciesDep

router = APIRouter(tags=["ranking"])


@router.get("/v1/policies")
async def list_policies(policies: PoliciesDep) -> dict[str, Any]:
    return policies.to_json()
