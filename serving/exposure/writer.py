"""The exposure log's file: a bounded queue, one writer thread, schema lines and rotation
(`ExposureLog`).

Rotation (`max_bytes` and/or `rotate_s`, from `--exposure-log-max-mb` and
`--exposure-log-rotate-minutes`): FILE is always the file being written. Before a line would
take it to `max_bytes`, or once it has been open `rotate_s` seconds (checked between writes and
while idle), the writer closes it, renames it `FILE.YYYYMMDDTHHMMSSZ` (the UTC time of the
rename; `-1`, `-2`, ... appended if that name is taken) and opens a new FILE; an empty file is
never rotated. Only the writer thread touches the files, so a line is written exactly once, in
exactly one file, and `close()` still drains the queue into the current file.

With features logged (`Exposure.schema_line`), the writer puts a schema line before the first
exposure of each (model, version) in each file, again in every file a rotation opens, so a file
can be read on its own.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from serving.exposure.entry import Exposure
from serving.metrics import Metrics

log = logging.getLogger("mtrank.serving")

MAX_PENDING_LINES = 100_000
_BATCH = 512  # lines written per write() call at most


class ExposureLog:
    """Appends exposures to `path` from a background thread; `put` never blocks."""

    _STOP = object()

    def __init__(
        self,
        path: Path,
        metrics: Metrics | None = None,
        max_pending: int = MAX_PENDING_LINES,
        *,
        max_bytes: int | None = None,
        rotate_s: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.rotate_s = rotate_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._warned_full = False
        self._file: TextIO | None = None
        self._size = 0  # bytes in the current file
        self._opened = 0.0  # time.monotonic() when it was opened (or first written, if empty)
        self._described: set[tuple[str, str]] = set()  # (model, version) with a schema line here

    def start(self) -> None:
        """Open the file for appending (OSError if it cannot be) and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        self._thread = threading.Thread(target=self._run, name="mtrank-exposure-log", daemon=True)
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

    # ---- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    batch = [self._queue.get(timeout=self._idle_wait())]
                except queue.Empty:  # idle: a file can still come of age
                    self._rotate_if_old()
                    continue
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is self._STOP for item in batch)
                exposures = [item for item in batch if item is not self._STOP]
                self._write(exposures)
                if stop:
                    return
        finally:
            if self._file is not None:
                self._file.close()

    def _idle_wait(self) -> float | None:
        """How long the thread may wait for an exposure before the file must be rotated."""
        if self.rotate_s is None or self._size == 0:
            return self.rotate_s
        return max(0.01, self._opened + self.rotate_s - time.monotonic())

    def _write(self, exposures: list[Exposure]) -> None:
        """Encode `exposures` and append them, rotating before a line that would overfill."""
        self._rotate_if_old()
        chunk: list[str] = []  # text for the current file
        size = lines = 0  # its bytes (JSON lines are ASCII) and exposure lines
        for exposure in exposures:
            try:
                line = exposure.to_json() + "\n"
                schema = exposure.schema_line()
            except (TypeError, ValueError) as err:  # e.g. a non-finite shadow score
                log.error("exposure %s not logged: %s", exposure.request_id, err)
                self._count("failed")
                continue
            full = self.max_bytes is not None and self._size + size + len(line) > self.max_bytes
            if full and self._size + size > 0:
                self._append(chunk, size, lines)
                chunk, size, lines = [], 0, 0
                self._rotate()
            if schema is not None and exposure.key not in self._described:
                self._described.add(exposure.key)
                chunk.append(schema + "\n")
                size += len(chunk[-1])
            chunk.append(line)
            size += len(line)
            lines += 1
        self._append(chunk, size, lines)

    def _append(self, chunk: list[str], size: int, lines: int) -> None:
        """Write `chunk` (`size` bytes, `lines` exposures) to the current file and count them."""
        if not chunk:
            return
        try:
            if self._file is None:  # a rotation could not open the new file: try again
                self._open()
            assert self._file is not None
            self._file.write("".join(chunk))
            if self._queue.empty():
                self._file.flush()
        except OSError as err:
            log.error("exposure log %s: write failed: %s", self.path, err)
            self._count("failed", lines)
            return
        if self._size == 0:
            self._opened = time.monotonic()  # an empty file's age starts at its first line
        self._size += size
        self._count("written", lines)

    def _rotate_if_old(self) -> None:
        if (
            self.rotate_s is not None
            and self._size > 0
            and time.monotonic() - self._opened >= self.rotate_s
        ):
            self._rotate()

    def _rotate(self) -> None:
        """Close FILE, rename it FILE.YYYYMMDDTHHMMSSZ[-N], open a new FILE."""
        try:
            if self._file is not None:
                self._file.close()
                self._file = None
            target = rotated_name(self.path, datetime.now(UTC))
            self.path.rename(target)
            log.info("exposure log rotated to %s", target)
            if self.metrics is not None:
                self.metrics.rotations.inc()
        except OSError as err:  # go on appending to FILE rather than lose lines
            log.error("exposure log %s: rotation failed: %s", self.path, err)
        try:
            self._open()
        except OSError as err:
            log.error("exposure log %s: cannot reopen it: %s", self.path, err)

    def _open(self) -> None:
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self._file.tell()
        self._opened = time.monotonic()
        self._described = set()

    def _count(self, outcome: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.exposures.labels(outcome).inc(n)


def rotated_name(path: Path, now: datetime) -> Path:
    """`path` + `.YYYYMMDDTHHMMSSZ` at `now` (UTC), with `-1`, `-2`, ... if that name exists."""
    stem = f"{path.name}.{now.strftime('%Y%m%dT%H%M%SZ')}"
    target, n = path.with_name(stem), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{stem}-{n}")
    return target
