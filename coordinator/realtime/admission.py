"""Who may open another websocket: caps per H5 session, per ERP terminal and per client address.

Each open socket holds one place in a Redis sorted set per cap it falls under (``lua/ws_slot.lua``,
member = its connection id, score = when its place lapses on the Redis clock), so the caps hold
across coordinator processes. The process that owns the socket keeps its places every
lease / 3; a process killed with sockets open stops keeping them and its places lapse within one
lease (``ws_slot_ttl_seconds``), so nobody has to clean up after it. A socket refused a cap is
closed with 1008 (``CloseCode.POLICY_VIOLATION``, reason "too many sockets"); the connect rate per
address (4429) is checked before this, in ``api/ws.py``.

Why Redis and not per process: diners' phones and terminals land on any process behind the load
balancer, so a per-process count would multiply every cap by the number of processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from coordinator.store import keys
from coordinator.store.auth import Principal
from coordinator.store.scripts import Scripts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caps:
    """Sockets allowed at once per H5 session, per terminal and per client address, and the lease of a place."""

    per_session: int = 4
    per_terminal: int = 8
    per_address: int = 200
    lease_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class Places:
    """The cap places one admitted socket holds: (sorted set key, member) pairs."""

    member: str
    keys: tuple[str, ...]


class Admission:
    """Takes, keeps and gives back sockets' places under the caps."""

    def __init__(self, scripts: Scripts, caps: Caps) -> None:
        self.scripts = scripts
        self.caps = caps
        self._held: dict[str, Places] = {}
        self._task: asyncio.Task | None = None

    def _caps_of(self, principal: Principal, address: str) -> list[tuple[str, int]]:
        """The (key, limit) pairs a socket of ``principal`` from ``address`` counts under."""
        store = principal.store_id or ""
        if principal.role == "h5":
            own = (keys.ws_session(store, principal.session_id or ""), self.caps.per_session)
        else:
            own = (keys.ws_terminal(store, principal.terminal_id or ""), self.caps.per_terminal)
        return [own, (keys.ws_address(address), self.caps.per_address)]

    async def admit(self, principal: Principal, address: str, member: str) -> Places | None:
        """Take a place under every cap of the socket; None (nothing held) when one is full."""
        taken: list[str] = []
        for key, limit in self._caps_of(principal, address):
            if not int(await self.scripts.ws_slot(keys=[key], args=["take", member, limit, self.caps.lease_ms])):
                await self._give(taken, member)
                return None
            taken.append(key)
        places = Places(member, tuple(taken))
        self._held[member] = places
        return places

    async def release(self, places: Places) -> None:
        """Give back a closed socket's places (they would lapse anyway)."""
        self._held.pop(places.member, None)
        await self._give(list(places.keys), places.member)

    async def _give(self, taken: list[str], member: str) -> None:
        for key in taken:
            try:
                await self.scripts.ws_slot(keys=[key], args=["give", member, 0, 0])
            except Exception as exc:  # the place lapses by itself within one lease
                log.warning("could not give back websocket place %s: %s", key, exc)

    def start(self) -> None:
        """Start keeping the places of this process's sockets."""
        self._task = asyncio.create_task(self._keep(), name="tablelock-ws-admission")

    async def stop(self) -> None:
        """Stop keeping places (the sockets are closed by then)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.caps.lease_ms / 3000)
            for places in list(self._held.values()):
                for key in places.keys:
                    try:
                        await self.scripts.ws_slot(keys=[key], args=["keep", places.member, 0, self.caps.lease_ms])
                    except Exception as exc:  # Redis away: the next round tries again
                        log.warning("could not keep websocket place %s: %s", key, exc)
