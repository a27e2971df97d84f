"""The sandbox payment provider as ``tablelock demo`` runs it: a child process beside the coordinator.

``SandboxProvider.start`` runs ``python -m coordinator.payments.sandbox --port P --data-dir D`` and
reads its URL and credentials; ``configure`` sets the demo store's WeChat Pay and Alipay settings
from them through the admin API (as an operator would paste merchant keys); ``stop`` ends it
(SIGTERM, then SIGKILL). On Linux the child is also asked to die with the demo (PR_SET_PDEATHSIG),
so a demo killed with -9 leaves no sandbox behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

PROVIDERS = ("wechatpay", "alipay")
_READY = "sandbox-pay listening on "


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_env() -> dict[str, str]:
    """The demo's environment, with this very coordinator package first on the child's path."""
    import coordinator

    root = str(Path(coordinator.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


class SandboxProvider:
    """One sandbox provider process: its URL, credentials and control token file."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = ""
        self.credentials: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> SandboxProvider:
        """Start the process and wait (bounded) until it listens and hands out its credentials."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "sandbox.log").open("ab")  # the child keeps its own copy of the fd
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "coordinator.payments.sandbox", "--port", str(self.port),
                "--data-dir", str(self.data_dir), stdout=asyncio.subprocess.PIPE, stderr=log, env=_child_env(),
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()
        try:
            assert self._proc.stdout is not None
            line = (await asyncio.wait_for(self._proc.stdout.readline(), timeout)).decode().strip()
            if not line.startswith(_READY):
                raise RuntimeError(f"sandbox-pay did not start (see {self.data_dir / 'sandbox.log'}): {line!r}")
            self.url = line[len(_READY):].rstrip("/")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                    http.get(f"{self.url}/sandbox/credentials") as response:
                response.raise_for_status()
                self.credentials = await response.json()
        except BaseException:
            await self.stop()
            raise
        return self

    @property
    def control_token_file(self) -> Path:
        """Where the control API's bearer token is (new at every start)."""
        return self.data_dir / "control-token"

    async def configure(self, coordinator_url: str, admin_token: str, store_id: str) -> list[str]:
        """Set the store's provider settings from the sandbox's credentials; return the providers set."""
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as http:
            for provider in PROVIDERS:
                path = f"{coordinator_url}/api/v1/admin/stores/{store_id}/payments/providers/{provider}"
                async with http.put(path, json=self.credentials[provider]) as response:
                    if response.status != 200:
                        raise RuntimeError(f"PUT {provider} settings: {response.status} {await response.text()}")
        return list(PROVIDERS)

    async def stop(self) -> None:
        """SIGTERM, wait (bounded), then SIGKILL; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

