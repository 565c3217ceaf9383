"""Errors the service answers with a 4xx, and the handlers that turn every error into JSON.

A `ServingError` carries its HTTP status and a `detail` shaped like FastAPI's own validation
errors (`[{"loc": [...], "msg": ..., "type": ...}]`) or a plain string. Anything else that escapes
a route is logged with its traceback and answered `500 {"detail": "internal error"}`: no stack
trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("mtrank.serving")

Loc = Sequence[str | int]


class ServingError(Exception):
    """An error the client caused; `status` and `detail` are what it gets back."""

    status = 400

    def __init__(self, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(detail if isinstance(detail, str) else detail[0]["msg"])
        self.detail = detail


class InvalidInput(ServingError):
    """422: a field of the body is wrong; `loc` names it, e.g. ("body", "context", "hour")."""

    status = 422

    def __init__(self, loc: Loc, message: str, kind: str = "value_error") -> None:
        super().__init__([{"loc": list(loc), "msg": message, "type": kind}])
        self.loc = tuple(loc)


class TooManyItems(InvalidInput):
    """413: more candidates (or instances) than `max_items`."""

    status = 413


class NotFound(ServingError):
    """404: an unknown model, version or experiment."""

    status = 404


class Unauthorized(ServingError):
    """401: an admin endpoint without the right API key."""

    status = 401


class Forbidden(ServingError):
    """403: an admin endpoint called from off the machine while no API key is configured."""

    status = 403


class Conflict(ServingError):
    """409: a request that cannot be met in the service's current state (e.g. a pin that fails)."""

    status = 409


class ModelLoadError(Exception):
    """A model version that cannot serve (corrupt files, schema mismatch, failed warmup)."""

    def __init__(self, message: str, code: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message)
        self.code = code  # TF Serving's error_code in model_version_status


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON answers for ServingError, validation errors, HTTP errors and crashes."""
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServingError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, without echoing the (possibly huge) input back."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()[:20]
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    log.error("unhandled error (request_id=%s)", request_id, exc_info=exc)
    return JSONResponse({"detail": "internal error", "request_id": request_id}, status_code=500)
