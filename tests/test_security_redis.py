"""Issue 15 finding 7: the embedded Redis is private: socket dir and data dir 0700, files 0600, TCP only with a password."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis

from coordinator import redis_private
from coordinator.redis_embedded import MAX_UNIX_SOCKET_PATH, EmbeddedRedis

pytestmark = pytest.mark.security


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_existing_data_dir_and_its_files_are_tightened(tmp_path: Path) -> None:
    """A 0755 data dir left by an older run becomes 0700; its AOF, log and lock files are 0600."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    old_aof = data / "appendonly.aof"
    old_aof.write_bytes(b"")
    os.chmod(old_aof, 0o644)
    with EmbeddedRedis(data) as server:
        client = redis.Redis.from_url(server.url, socket_timeout=2, protocol=2)
        client.set("k", "v")
        client.close()
        assert _mode(data) == 0o700
        for name in ("appendonly.aof", "redis.log", "redis.lock"):
            assert _mode(data / name) == 0o600, name
        assert _mode(server.socket_path) == 0o700


def test_files_the_server_creates_are_0600(tmp_path: Path) -> None:
    """The AOF and an RDB written by redis-server itself are 0600 (the child runs with umask 077)."""
    with EmbeddedRedis(tmp_path / "fresh") as server:
        client = redis.Redis.from_url(server.url, socket_timeout=5, protocol=2)
        client.set("k", "v")
        client.save()  # an RDB, though the embedded server takes no snapshots by itself
        client.close()
        assert _mode(tmp_path / "fresh" / "appendonly.aof") == 0o600
        assert _mode(tmp_path / "fresh" / "dump.rdb") == 0o600


def test_a_long_data_dir_never_gives_an_open_tcp_port(tmp_path: Path) -> None:
    """Past the sun_path limit the socket is in a 0700 temp dir, not on a password-less TCP port."""
    deep = tmp_path / ("d" * (MAX_UNIX_SOCKET_PATH - len(str(tmp_path))))
    with EmbeddedRedis(deep) as server:
        assert server.port is None
        assert _mode(server.socket_path.parent) == 0o700
        assert _mode(server.socket_path) == 0o700


def test_tcp_when_unavoidable_requires_a_generated_password(tmp_path: Path, monkeypatch) -> None:
    """With no short private dir, TCP gets a requirepass: kept off the command line and out of safe_url."""
    monkeypatch.setattr(redis_private, "short_socket_dir", lambda max_path: None)
    deep = tmp_path / ("d" * (MAX_UNIX_SOCKET_PATH - len(str(tmp_path))))
    with EmbeddedRedis(deep) as server:
        assert server.port is not None and server.password
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2, protocol=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        client = redis.Redis.from_url(server.url, socket_timeout=2, protocol=2)
        assert client.ping()
        client.close()
        assert server.password not in server.safe_url and server.password not in repr(server)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        assert server.password not in cmdline
        assert _mode(deep / "redis-auth.conf") == 0o600
    assert not (deep / "redis-auth.conf").exists()
