"""The exposure log's file: a bounded queue and one writer thread (`ExposureLog`)."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

from serving.exposure.entry import Exposure
from serving.metrics import Metrics

log = logging.getLogger("mtrank.serving")

MAX_PENDING_LINES = 100_000
_BATCH = 512  # lines written per write() call at most


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
