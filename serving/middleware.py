"""One ASGI middleware around every request: request id, body size limit, metrics, access log.

- Request id: the client's `X-Request-ID` if it is a short token, else a new one (32 hex
  digits, like a uuid4's: 64 random bits drawn once per process, then a counter; a uuid4 per
  request cost 2% of the event loop); on `request.state.request_id` and echoed in the
  `X-Request-ID` response header.
- Body limit: a `Content-Length` over `max_body_bytes` is answered 413 before the body is read;
  a chunked body is counted as it arrives and stopped at the limit (413).
- Metrics and access log, after the response: the route's template (not the raw path, so ids
  do not become label values), the model, version and variant the route put on
  `request.state`, the status and the latency; one JSON line per request on the
  `mtrank.access` logger.

A plain ASGI class rather than Starlette's BaseHTTPMiddleware: it adds no task or stream per
request on the hot path.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

access_log = logging.getLogger("mtrank.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class ServiceMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, log_requests: bool = True
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests
        self._id_prefix = secrets.token_hex(8)  # per process: each worker draws its own
        self._id_counter = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or ())
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = (
            given if _REQUEST_ID.match(given) else f"{self._id_prefix}{next(self._id_counter):016x}"
        )
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        try:
            if length > self.max_body_bytes:
                await _too_large(self.max_body_bytes, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            self._record(scope, state, status, time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
        """`receive`, raising 413 once the body passes the limit (bodies without Content-Length)."""
        received = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        return counted

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        model = state.get("model") or ""
        variant = state.get("variant") or ""
        self.metrics.requests.labels(template, model, variant, str(status)).inc()
        self.metrics.latency.labels(template, model, variant).observe(seconds)
        if self.log_requests and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "request_id": state.get("request_id"),
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "route": template,
                        "status": status,
                        "latency_ms": round(seconds * 1e3, 3),
                        "model": state.get("model"),
                        "version": state.get("version"),
                        "variant": state.get("variant"),
                        "policy": state.get("policy"),
                        "items": state.get("items"),
                        "degraded": state.get("degraded"),
                        "client": (scope.get("client") or (None,))[0],
                    }
                )
            )


async def _too_large(limit: int, send: Send) -> None:
    body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
