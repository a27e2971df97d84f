"""`tablelock serve` as a real process: readiness, flags over env, clean exit with its Redis gone."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.redis_servers import free_port

TABLELOCK = Path(sys.executable).parent / "tablelock"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLELOCK_")}
    env.update(extra)
    return env


def _children(pid: int) -> dict[int, str]:
    """Return {pid: command name} of the direct children of `pid`, read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # comm is parenthesised and may hold spaces; the fields after it are space-separated.
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found[int(entry.name)] = comm
    return found


def _wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"tablelock serve exited with {proc.returncode}\n{out}\n{err}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"no 200 from /readyz within {timeout}s\n{out}\n{err}")


def _serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(TABLELOCK), "serve", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"tablelock serve ignored signal {signum}\n{out}\n{err}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_with_embedded_redis_is_ready_and_exits_cleanly(tmp_path: Path, signum: int) -> None:
    """serve starts its own redis-server, answers /readyz 200, and on a signal exits 0 with Redis gone."""
    port = free_port()
    data_dir = tmp_path / "data"
    # The env asks for another port: the flag must win.
    proc = _serve(["--port", str(port), "--data-dir", str(data_dir)], _env(TABLELOCK_PORT=str(free_port())), tmp_path)
    try:
        _wait_ready(proc, port)
        redis_children = [pid for pid, comm in _children(proc.pid).items() if comm == "redis-server"]
        assert len(redis_children) == 1
        assert (data_dir / "redis.sock").exists()
    finally:
        out, err = _stop(proc, signum)
    assert proc.returncode == 0, err
    assert not Path(f"/proc/{redis_children[0]}").exists(), "redis-server outlived tablelock serve"
    assert not (data_dir / "redis.sock").exists()
    assert "Traceback" not in err
    assert f"admin token: {data_dir / 'admin_token'}" in out
    assert f"http://127.0.0.1:{port}/admin/" in out and f"http://127.0.0.1:{port}/readyz" in out
    assert stat.S_IMODE((data_dir / "admin_token").stat().st_mode) == 0o600
    assert "embedded Redis" in err  # the log line saying it started one


def test_serve_with_redis_url_starts_no_redis(tmp_path: Path, redis_single_url: str) -> None:
    """With a Redis URL configured, serve uses it and starts no redis-server of its own."""
    port = free_port()
    env = _env(TABLELOCK_REDIS_URL=redis_single_url, TABLELOCK_ADMIN_TOKEN="t" * 32)
    proc = _serve(["--port", str(port), "--data-dir", str(tmp_path / "data")], env, tmp_path)
    try:
        _wait_ready(proc, port)
        assert "redis-server" not in _children(proc.pid).values()
    finally:
        out, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert "admin token: as configured" in out
    assert not (tmp_path / "data" / "admin_token").exists()


def test_invalid_settings_exit_2_with_a_message(tmp_path: Path) -> None:
    """A bad setting makes serve exit 2 with one readable line, no traceback and no Redis started."""
    done = subprocess.run(
        [str(TABLELOCK), "serve", "--data-dir", str(tmp_path)],
        env=_env(TABLELOCK_PORT="not-a-port"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "invalid settings" in done.stderr and "port" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "redis.log").exists()


def test_missing_config_file_exit_2(tmp_path: Path) -> None:
    """serve --config naming a missing file exits 2 and names the file."""
    done = subprocess.run(
        [str(TABLELOCK), "serve", "--config", str(tmp_path / "missing.toml")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "missing.toml" in done.stderr and "Traceback" not in done.stderr


def test_command_is_required() -> None:
    """`tablelock` without a subcommand is a usage error; `--help` lists serve."""
    assert subprocess.run([str(TABLELOCK)], capture_output=True, timeout=30).returncode == 2
    help_text = subprocess.run([str(TABLELOCK), "--help"], capture_output=True, text=True, timeout=30, check=True)
    assert "serve" in help_text.stdout
