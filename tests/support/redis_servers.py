"""pytest plugin: real redis-server processes (one node and a 3-master cluster) for integration tests.

Tests share the session's servers and isolate themselves by unique ids (`uid`), never by FLUSHALL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from coordinator.redis_embedded import EmbeddedCluster, EmbeddedRedis
from coordinator.redis_embedded import free_port as _free_port
from coordinator.store.redis_conn import AnyRedis, open_redis


def free_port() -> int:
    """Return a loopback TCP port that is free now."""
    return _free_port()


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One redis-server for the whole session, on loopback TCP."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-single"), tcp=True) as server:
        yield server


@pytest.fixture(scope="session")
def redis_single_url(redis_single: EmbeddedRedis) -> str:
    """URL of the session's single redis-server."""
    return redis_single.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A Redis Cluster of 3 masters for the whole session."""
    with EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: EmbeddedCluster) -> str:
    """URL of one node of the session's cluster."""
    return redis_cluster.url


@pytest.fixture(params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: against the single server and against the cluster."""
    # Lazy, so a run that selects only "single" tests never starts the cluster.
    return request.getfixturevalue(f"redis_{request.param}_url")


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[AnyRedis]:
    """A coordinator-configured client (plain or cluster) of `redis_url`, closed after the test."""
    client = await open_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedRedis]]:
    """Start private redis-servers (e.g. to stop one mid-test); all are stopped after the test."""
    started: list[EmbeddedRedis] = []

    def start(**kwargs: object) -> EmbeddedRedis:
        server = EmbeddedRedis(tmp_path / f"redis-{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def uid() -> str:
    """A short unique string, valid as a SPEC id, to keep this test's keys apart from others'."""
    return uuid.uuid4().hex[:12]
