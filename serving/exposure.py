"""The exposure log (`--exposure-log FILE`): one JSON line per scored `/v1/rank` request.

    {"request_id": "9f..", "time": "2026-11-21T10:00:00.123Z", "user_id": "u17",
     "experiment": "gates", "variant": "control", "bucket": 1234, "model": "mmoe", "version": "3",
     "item_ids": ["i5", "i9"], "context": {"device": "ios", "hour": "13", "position": 1.0},
     "scores": {"ctr": [0.05, 0.02], "cvr": [..], "ctcvr": [..]},
     "shadow": {"cgc": {"version": "1", "scores": {"ctr": [..], ..}}},
     "degraded": false}

`scores` are columns aligned with `item_ids`; `experiment`, `variant` and `bucket` are null for
a request that named its model; `shadow` is `{}` without shadow models (a shadow that failed has
`"error"` instead of `"scores"`; `"shadow_skipped": true` marks a request whose shadows were not
scored because too many were already waiting).

Two parts:

- `ExposureLog`: a bounded queue and one writer thread. The request path only enqueues (never
  blocks on the disk, never encodes JSON); the thread encodes, appends and flushes whenever the
  queue runs empty. `close()` drains the queue before it returns, so a clean shutdown loses
  nothing. If the queue is full (the disk cannot keep up), lines are dropped and counted
  (`mtrank_exposures_total{outcome="dropped"}`) rather than slowing requests down.
- `ExposureRecorder`: what `/v1/rank` calls after scoring. With no shadow models the exposure goes
  to the log at once. With shadows it starts a task that scores them after the response is
  written, in the model thread pool, then logs the exposure with every score; `aclose()` waits
  for those tasks (the lifespan calls it before closing the log and the pool).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Request

from feature_store.store import OnlineFeatures
from serving.metrics import Metrics
from serving.routing import Route
from serving.scoring import run_model
from serving.servable import Servable

log = logging.getLogger("mtrank.serving")

MAX_PENDING_LINES = 100_000
MAX_PENDING_SHADOWS = 256
_BATCH = 512  # lines written per write() call at most


@dataclass
class Exposure:
    """One scored request, as it will be written (numpy score columns until then)."""

    request_id: str
    time: float
    user_id: str
    experiment: str | None
    variant: str | None
    bucket: int | None
    model: str
    version: str
    item_ids: Sequence[str]
    context: Mapping[str, Any]
    scores: Mapping[str, np.ndarray]
    degraded: bool
    shadow: dict[str, dict[str, Any]] = field(default_factory=dict)
    shadow_skipped: bool = False

    def to_json(self) -> str:
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "request_id": self.request_id,
            "time": stamp.replace("+00:00", "Z"),
            "user_id": self.user_id,
            "experiment": self.experiment,
            "variant": self.variant,
            "bucket": self.bucket,
            "model": self.model,
            "version": self.version,
            "item_ids": list(self.item_ids),
            "context": dict(self.context),
            "scores": _columns(self.scores),
            "shadow": {
                name: {k: _columns(v) if k == "scores" else v for k, v in shadow.items()}
                for name, shadow in self.shadow.items()
            },
            "degraded": self.degraded,
        }
        if self.shadow_skipped:
            entry["shadow_skipped"] = True
        return json.dumps(entry, allow_nan=False)


def _columns(scores: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
    """Score columns as lists of floats rounded to 8 decimals (the response's precision)."""
    return {name: np.round(np.asarray(v, np.float64), 8).tolist() for name, v in scores.items()}


class ExposureLog:
    """Appends exposures to `path` from a background thread; `put` never blocks."""

    _STOP = object()

    def __init__(
        self, path: Path, metrics: Metrics | None = None, max_pending: int = MAX_PENDING_LINES
    ) -> None:
        self.path = Path(path)
        self.metrics = metrics
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._warned_full = False

    def start(self) -> None:
        """Open the file for appending (OSError if it cannot be) and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a", encoding="utf-8")
        self._thread = threading.Thread(
            target=self._run, args=(file,), name="mtrank-exposure-log", daemon=True
        )
        self._thread.start()

    def put(self, exposure: Exposure) -> bool:
        """Queue one exposure; False (and counted as dropped) if the queue is full or closed."""
        if self._closed:
            self._count("dropped")
            return False
        try:
            self._queue.put_nowait(exposure)
        except queue.Full:
            self._count("dropped")
            if not self._warned_full:
                self._warned_full = True
                log.warning("exposure log %s cannot keep up: dropping exposures", self.path)
            return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the thread and close the file (blocking)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._queue.put(self._STOP)  # blocks only while the queue is full, i.e. until it drains
        self._thread.join(timeout)

    def _run(self, file: Any) -> None:
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is self._STOP for item in batch)
                exposures = [item for item in batch if item is not self._STOP]
                self._write(file, exposures)
                if stop:
                    return
        finally:
            file.close()

    def _write(self, file: Any, exposures: list[Exposure]) -> None:
        if not exposures:
            return
        lines: list[str] = []
        for exposure in exposures:
            try:
                lines.append(exposure.to_json())
            except (TypeError, ValueError) as err:  # e.g. a non-finite shadow score
                log.error("exposure %s not logged: %s", exposure.request_id, err)
                self._count("failed")
        try:
            file.write("".join(line + "\n" for line in lines))
            if self._queue.empty():
                file.flush()
        except OSError as err:
            log.error("exposure log %s: write failed: %s", self.path, err)
            self._count("failed", len(lines))
            return
        self._count("written", len(lines))

    def _count(self, outcome: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.exposures.labels(outcome).inc(n)


class ExposureRecorder:
    """Turns scored requests into exposures: logs them, and scores shadow models off the path."""

    def __init__(
        self,
        log: ExposureLog | None,
        executor: ThreadPoolExecutor,
        metrics: Metrics,
        max_pending_shadows: int = MAX_PENDING_SHADOWS,
    ) -> None:
        self.log = log
        self.executor = executor
        self.metrics = metrics
        self.max_pending_shadows = max_pending_shadows
        self._tasks: set[asyncio.Task[None]] = set()

    def record(
        self,
        route: Route,
        *,
        request_id: str,
        user_id: str,
        item_ids: Sequence[str],
        context: Mapping[str, Any],
        raw_context: Mapping[str, Any] | None,
        found: OnlineFeatures,
        scores: Mapping[str, np.ndarray],
        degraded: bool,
    ) -> None:
        """Log the request (now, or once its shadows are scored); never waits for either."""
        servable = route.servable
        if route.experiment is not None:
            self.metrics.assignments.labels(route.experiment, route.variant or "").inc()
        if self.log is None and not route.shadows:
            return
        exposure = Exposure(
            request_id=request_id,
            time=time.time(),
            user_id=user_id,
            experiment=route.experiment,
            variant=route.variant,
            bucket=route.bucket,
            model=servable.name,
            version=servable.model_version,
            item_ids=item_ids,
            context=context,
            scores=scores,
            degraded=degraded,
        )
        if not route.shadows:
            self._log(exposure)
            return
        if len(self._tasks) >= self.max_pending_shadows:
            for shadow in route.shadows:
                self.metrics.shadows.labels(route.experiment or "", shadow.name, "skipped").inc()
            exposure.shadow_skipped = True
            self._log(exposure)
            return
        task = asyncio.get_running_loop().create_task(
            self._score_shadows(exposure, route, raw_context, found),
            name=f"mtrank-shadow-{request_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score_shadows(
        self,
        exposure: Exposure,
        route: Route,
        raw_context: Mapping[str, Any] | None,
        found: OnlineFeatures,
    ) -> None:
        results = await asyncio.gather(
            *(self._score_one(shadow, raw_context, found) for shadow in route.shadows)
        )
        for shadow, result in zip(route.shadows, results, strict=True):
            exposure.shadow[shadow.name] = result
            outcome = "failed" if "error" in result else "scored"
            self.metrics.shadows.labels(route.experiment or "", shadow.name, outcome).inc()
        self._log(exposure)

    async def _score_one(
        self, servable: Servable, raw_context: Mapping[str, Any] | None, found: OnlineFeatures
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"version": servable.model_version}
        try:
            context, _ = servable.batcher.context(raw_context)
            batch = servable.batcher.rank_batch(found, context)
            entry["scores"] = await run_model(servable, batch, self.executor, self.metrics)
        except Exception as err:  # a shadow must never hurt the request or the log
            log.warning("shadow model %s failed: %s", servable.name, err)
            entry["error"] = str(err)[:300]
        return entry

    def _log(self, exposure: Exposure) -> None:
        if self.log is not None:
            self.log.put(exposure)

    @property
    def pending_shadows(self) -> int:
        return len(self._tasks)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Finish the shadow tasks (up to `timeout`), then drain and close the log."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d shadow scorings unfinished at shutdown: not logged", len(late))
        if self.log is not None:
            await asyncio.to_thread(self.log.close)


async def get_exposures(request: Request) -> ExposureRecorder:
    return request.app.state.exposures  # type: ignore[no-any-return]


ExposuresDep = Annotated[ExposureRecorder, Depends(get_exposures)]
