"""`mtrank serve --workers N`: N processes answering one port, each of them the whole service.

uvicorn's supervisor (`uvicorn.supervisors.Multiprocess`, what `uvicorn --workers` runs) binds
the socket once, starts N children with the `spawn` start method, hands each the socket and
replaces a child that dies; the kernel gives each new connection to one of them. Every child
builds its app with `create_worker_app` (an import-string factory) and runs the lifespan of a
single process (`serving.app`): it loads and warms the models itself, opens the online store,
loads the policies and polls for new versions and policy edits on its own, so a new version
reaches every worker through that worker's poll, with no coordination between them.

What `serve_workers` (the supervising process) hands the children:

- settings: the validated `Settings` of the flags and environment, sized per worker
  (`worker_settings`: TensorFlow's threads cores // N, the model threads ceil(model_threads / N),
  unless given), as `MTRANK_*` environment variables (`settings_environment`), so a child's
  `Settings()` is the parent's, field for field.
- `UV_TCP_SINGLE_ACCEPT=1` (unless set): each child accepts one connection at a time and yields,
  so that connections opened at once spread over the workers (`SINGLE_ACCEPT_ENV`).
- a run directory (a fresh temp dir per `mtrank serve`, `$MTRANK_SERVE_DIR`, removed at exit):
  `metrics/` is `PROMETHEUS_MULTIPROC_DIR`, set before any child imports prometheus-client, whose
  multiprocess mode keeps each process's values in memory-mapped files there, so that /metrics of
  any worker adds up all of them (`serving.metrics`); `slots/` holds one lock file per worker
  number; `startup-error` the error that stopped a worker's startup, which the parent prints as
  one line.

Worker numbers: a child takes the lowest number K whose slot lock (`flock`) is free; the kernel
frees it when the process exits, so the replacement of a dead worker K is worker K again. Worker
K appends its exposures to `FILE.wK` (`worker_file`; its own writer thread and rotation,
`FILE.wK.YYYYMMDDTHHMMSSZ`): N processes never write one file. `mtrank ab-report` and
`mtrank logs to-dataset` take them all: `--exposures FILE*`.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ranker.errors import MtrankError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.settings import Settings

log = logging.getLogger("mtrank.serving")

SERVE_DIR_ENV = "MTRANK_SERVE_DIR"  # the run directory, for the children
LOG_LEVEL_ENV = "MTRANK_SERVE_LOG_LEVEL"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
# libuv (uvloop's engine) then accepts one connection per wake-up and yields, so that the
# workers sharing the listening socket take turns; by default the first one awake accepted
# every pending connection: 8 keep-alive clients connecting at once were split 2/6 or 3/5 more
# often than 4/4, and a worker with 6 of them is the slower one (README, serving figures).
SINGLE_ACCEPT_ENV = "UV_TCP_SINGLE_ACCEPT"
# A child that does not answer the supervisor's ping for this long is killed and replaced; also
# how long the supervisor may take to notice a child that failed to start.
HEALTHCHECK_S = 10
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, as in a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_settings(settings: Settings, cores: int) -> Settings:
    """The settings of each of `settings.workers` processes on `cores` cores: TensorFlow's
    intra- and inter-op threads cores // workers (at least 1) and the model threads
    ceil(model_threads / workers), each unless given (flag or environment)."""
    workers = settings.workers
    update: dict[str, int] = {}
    if settings.tf_threads is None:
        update["tf_threads"] = max(1, cores // workers)
    if "model_threads" not in settings.model_fields_set:
        update["model_threads"] = math.ceil(settings.model_threads / workers)
    return settings.model_copy(update=update)


def settings_environment(settings: Settings) -> dict[str, str | None]:
    """`MTRANK_<FIELD>` -> the value a child's `Settings()` parses back to `settings`' value;
    None for a field that is None (the variable must be unset, not empty)."""
    from pydantic import SecretStr

    environment: dict[str, str | None] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            value = "true" if value else "false"
        environment[f"MTRANK_{name.upper()}"] = None if value is None else str(value)
    return environment


def worker_file(path: Path, index: int) -> Path:
    """Worker `index`'s own file for `path`: FILE.wK."""
    return path.with_name(f"{path.name}.w{index}")


class ServeRun:
    """The run directory the supervising process makes for its workers, and removes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def create(cls) -> ServeRun:
        run = cls(Path(tempfile.mkdtemp(prefix="mtrank-serve-")))
        run.metrics_dir.mkdir()
        run.slots_dir.mkdir()
        return run

    @property
    def metrics_dir(self) -> Path:
        return self.directory / "metrics"

    @property
    def slots_dir(self) -> Path:
        return self.directory / "slots"

    @property
    def startup_error_file(self) -> Path:
        return self.directory / "startup-error"

    def startup_error(self) -> str | None:
        """The first startup error a worker reported, if any."""
        try:
            return self.startup_error_file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Worker:
    """One child's identity in the run: its number, held by a slot lock for its lifetime."""

    def __init__(self, index: int, run: ServeRun, lock: TextIO) -> None:
        self.index = index
        self.run = run
        self._lock = lock

    @classmethod
    def claim(cls, run: ServeRun) -> Worker:
        """Take the lowest free worker number; first forget the gauges of workers that died."""
        forget_dead_processes(run.metrics_dir)
        for index in itertools.count():
            lock = (run.slots_dir / f"{index}.lock").open("a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return cls(index, run, lock)
        raise AssertionError("unreachable")  # itertools.count() never ends

    @property
    def metrics_dir(self) -> Path:
        return self.run.metrics_dir

    def exposure_log(self, path: Path) -> Path:
        return worker_file(path, self.index)

    def startup_failed(self, error: MtrankError) -> None:
        """Hand the error that stops this worker's startup to the supervising process (the
        first worker's error is kept)."""
        with (
            contextlib.suppress(FileExistsError),
            self.run.startup_error_file.open("x", encoding="utf-8") as file,
        ):
            file.write(str(error))

    def close(self) -> None:
        """At a clean exit: drop this process's live gauges from the aggregate, free the number."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), str(self.metrics_dir))
        self._lock.close()


def forget_dead_processes(metrics_dir: Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer run (prometheus-client's
    `mark_process_dead`, which a worker killed without a clean exit could not call); their
    counters and histograms stay, so totals never go down. Returns the pids forgotten."""
    from prometheus_client import multiprocess

    dead = set()
    for path in metrics_dir.iterdir():
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match is not None and not _running(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, str(metrics_dir))
    return sorted(dead)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has that pid now
        return True
    return True


def create_worker_app() -> FastAPI:
    """The app of one worker (uvicorn calls this in each child): the settings and the run
    directory come from the environment `serve_workers` set."""
    from serving.app import create_app
    from serving.logs import configure_logging
    from serving.settings import Settings

    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    worker = Worker.claim(ServeRun(Path(os.environ[SERVE_DIR_ENV])))
    return create_app(Settings(), worker=worker)  # type: ignore[call-arg]  # models_dir: env


def serve_workers(settings: Settings, log_level: str = "info") -> int:
    """Run `settings.workers` worker processes on settings' host and port until Ctrl-C or
    SIGTERM (each drains its exposures before it exits); 0 after a clean stop, MtrankError with
    a worker's startup error, 1 if a worker failed to start for another reason."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    cores = cpu_cores()
    if settings.workers > cores:
        log.warning(
            "--workers %d on %d cores: the workers will compete for the CPU",
            settings.workers,
            cores,
        )
    each = worker_settings(settings, cores)
    run = ServeRun.create()
    try:
        with environment(
            worker_environment(each, run, log_level)
        ):  # spawned children (restarts too) inherit it
            config = uvicorn.Config(
                "serving.workers:create_worker_app",
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=settings.workers,
                log_config=None,
                access_log=False,  # the service writes its own JSON access log
                timeout_graceful_shutdown=10,
                timeout_worker_healthcheck=HEALTHCHECK_S,
            )
            try:
                sock = config.bind_socket()
            except SystemExit:  # uvicorn logged why
                raise MtrankError(
                    f"--host {settings.host} --port {settings.port}: cannot listen there"
                ) from None
            log.info(
                "%d workers, each with %d TensorFlow threads and %d model threads",
                settings.workers,
                each.tf_threads,
                each.model_threads,
            )
            supervisor = Multiprocess(config, sockets=[sock])
            supervisor.run()
            sock.close()
        error = run.startup_error()
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    finally:
        run.remove()
    if error is not None:
        raise MtrankError(error)
    return 1 if failed else 0


def worker_environment(each: Settings, run: ServeRun, log_level: str) -> dict[str, str | None]:
    """The environment the children inherit: their settings, the run directory and its metrics
    directory, the log level, and libuv's single accept unless the environment says otherwise."""
    return {
        **settings_environment(each),
        METRICS_ENV: str(run.metrics_dir),
        SERVE_DIR_ENV: str(run.directory),
        LOG_LEVEL_ENV: log_level,
        SINGLE_ACCEPT_ENV: os.environ.get(SINGLE_ACCEPT_ENV, "1"),
    }


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            _set(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set(name, value)


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
