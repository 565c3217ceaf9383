"""The model manager: which version of each model serves, and swapping versions without downtime.

TF Serving's "latest" version policy over `MODELS/NAME/VERSION/`: each model serves the highest
version on disk that loads, passes its checks and warms up, unless a version is pinned. `refresh`
(called at startup and then every `poll_interval_s` from a thread) loads a newer version off to
the side and swaps it in with one reference assignment, so a request that already holds the old
`Servable` finishes on it and the next one gets the new one. A version that fails is refused:
logged, shown in the model's status with its error, never retried until `forget_failures`
(admin reload), and the old version keeps serving. The app may refuse a version that loaded
(`admit`: it checks the ranking policies). A refused newest version at startup falls
back to the next lower one. Removing the serving version's directory rolls back to the highest
one left; a version pinned by an admin stays until unpinned.

Reads (`get`) take no lock; loads are serialized by one lock, so a poll and a pin never race.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.errors import Conflict, ModelLoadError, NotFound
from serving.servable import Servable

log = logging.getLogger("mtrank.serving")

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class VersionStatus:
    """One entry of TF Serving's `model_version_status`."""

    version: int
    state: str  # LOADING, AVAILABLE, END (unloaded or refused)
    error_code: str = "OK"
    error_message: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


Listener = Callable[[str, int, str], None]  # (model, version, outcome: loaded | refused)


class ModelManager:
    """Loads every model under `models_dir` and keeps the right version of each serving."""

    def __init__(
        self, models_dir: Path, *, warmup_rows: int = 16, listener: Listener | None = None
    ) -> None:
        self.models_dir = Path(models_dir)
        self.warmup_rows = warmup_rows
        self._listener = listener
        self.admit: Callable[[Servable], None] | None = None
        """Called with each version loaded and warmed, before it swaps in; a ModelLoadError it
        raises refuses the version (the app checks the ranking policies this way)."""
        self._serving: dict[str, Servable] = {}
        self._pins: dict[str, int] = {}
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._refused: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    # ---- the hot path -------------------------------------------------------------------------

    def get(self, name: str) -> Servable | None:
        """The version of `name` serving now (hold on to it for the whole request)."""
        return self._serving.get(name)

    @property
    def names(self) -> list[str]:
        """The models that serve, by name."""
        return sorted(self._serving)

    @property
    def ready(self) -> bool:
        return bool(self._serving)

    # ---- status ----------------------------------------------------------------------------------

    def known(self, name: str) -> bool:
        return name in self._status or name in self._serving

    def status(self, name: str) -> list[VersionStatus]:
        """Every version of `name` the manager has seen, newest first."""
        versions = self._status.get(name, {})
        return [versions[v] for v in sorted(versions, reverse=True)]

    def pinned(self, name: str) -> int | None:
        return self._pins.get(name)

    # ---- loading ---------------------------------------------------------------------------------

    def refresh(self) -> list[tuple[str, int, str]]:
        """Scan the models directory and load what should serve now; returns what happened."""
        with self._lock:
            events: list[tuple[str, int, str]] = []
            for name, versions in self.scan().items():
                events += self._refresh_model(name, versions)
            return events

    def scan(self) -> dict[str, list[int]]:
        """Model name -> its version numbers on disk, newest first (hidden or odd names skipped)."""
        found: dict[str, list[int]] = {}
        try:
            children = sorted(self.models_dir.iterdir())
        except OSError as err:
            log.error("cannot list models directory %s: %s", self.models_dir, err)
            return found
        for child in children:
            if not _MODEL_NAME.match(child.name) or not child.is_dir():
                continue
            try:
                versions = [
                    int(p.name)
                    for p in child.iterdir()
                    if p.name.isdigit() and int(p.name) > 0 and p.is_dir()
                ]
            except OSError:
                continue
            if versions:
                found[child.name] = sorted(versions, reverse=True)
        return found

    def pin(self, name: str, version: int) -> Servable:
        """Serve `version` of `name` until `unpin`; loads it now (blocking)."""
        with self._lock:
            if not (self.models_dir / name / str(version)).is_dir():
                raise NotFound(f"model {name!r} has no version {version} in {self.models_dir}")
            current = self._serving.get(name)
            if current is None or current.version != version:
                self._refused.discard((name, version))
                try:
                    self._load(name, version, current)
                except ModelLoadError as err:
                    raise Conflict(f"version {version} of {name!r} cannot serve: {err}") from None
            self._pins[name] = version
            log.info("pinned %s to version %d", name, version)
            return self._serving[name]

    def unpin(self, name: str) -> None:
        """Back to the latest-version policy (applied at once)."""
        with self._lock:
            if self._pins.pop(name, None) is None:
                return
            log.info("unpinned %s", name)
            versions = self.scan().get(name, [])
            self._refresh_model(name, versions)

    def forget_failures(self) -> None:
        """Let refused versions be tried again on the next refresh (admin reload)."""
        with self._lock:
            self._refused.clear()

    # ---- internals -------------------------------------------------------------------------

    def _refresh_model(self, name: str, versions: list[int]) -> list[tuple[str, int, str]]:
        current = self._serving.get(name)
        pin = self._pins.get(name)
        candidates = [pin] if pin is not None and pin in versions else versions
        if pin is not None and pin not in versions:
            return []  # the pinned directory went away: keep serving what is loaded
        events: list[tuple[str, int, str]] = []
        for version in candidates:
            if current is not None and version == current.version:
                break
            if (name, version) in self._refused:
                continue
            try:
                self._load(name, version, current)
            except ModelLoadError:
                events.append((name, version, "refused"))
                continue
            events.append((name, version, "loaded"))
            break
        return events

    def _load(self, name: str, version: int, current: Servable | None) -> None:
        """Load, check and warm one version, then swap it in; ModelLoadError if refused."""
        statuses = self._status.setdefault(name, {})
        statuses[version] = VersionStatus(version, "LOADING")
        try:
            servable = Servable.load(
                self.models_dir / name / str(version), name, version, self.warmup_rows
            )
            if current is not None:
                dropped = [o for o in current.outputs if o not in servable.outputs]
                if dropped:
                    raise ModelLoadError(
                        f"version {version} drops outputs {dropped} that version "
                        f"{current.version} serves",
                        "INVALID_ARGUMENT",
                    )
            if self.admit is not None:
                self.admit(servable)
        except ModelLoadError as err:
            self._refused.add((name, version))
            statuses[version] = VersionStatus(version, "END", err.code, str(err))
            log.error("refused %s version %d: %s", name, version, err)
            self._notify(name, version, "refused")
            raise
        self._serving[name] = servable  # the swap: one reference assignment
        statuses[version] = VersionStatus(version, "AVAILABLE")
        if current is not None:
            statuses[current.version] = VersionStatus(current.version, "END")
            log.info("%s: version %d replaces version %d", name, version, current.version)
        self._notify(name, version, "loaded")

    def _notify(self, name: str, version: int, outcome: str) -> None:
        if self._listener is not None:
            self._listener(name, version, outcome)
