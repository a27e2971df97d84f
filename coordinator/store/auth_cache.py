"""An in-process cache of ERP terminal records, so an authenticated request needs no Redis read.

A cached record must never outlive a revocation. Three things see to it:

* revocation publishes ``disconnect_terminal`` on the control channel (hub.py); every process
  drops the entry when it reads it (``invalidate``);
* the cache is trusted only while this process's pub/sub subscription is up, and a new
  subscription (a reconnect, after which messages may have been missed) empties it: ``link``
  gives the subscription number, or None while it is down;
* entries live at most ``ttl_seconds``, which bounds a message lost on a link not yet known dead.

Between the revocation's write and its message reaching a process (milliseconds), that process
may still accept the token for a read. The lock scripts do not depend on the cache: they check
the token hash against ``tl:{s}:terminals`` in the same atomic step (lib.lua ``authentic``), so a
revoked terminal never takes, renews or releases a lock.

A fetch that began before an invalidation must not put its (older) record back: ``begin`` hands
out a ticket, and ``put`` drops a record whose ticket predates an invalidation or a new link.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class TerminalCache:
    """Terminal records by (store_id, terminal_id), bounded in age and size."""

    def __init__(self, *, ttl_seconds: float = 5.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._epoch = 0
        self._link: int | None = None
        #: The subscription number while the control channel is subscribed, else None (never trusted).
        self.link: Callable[[], int | None] = lambda: None

    def _trusted(self) -> int | None:
        link = self.link()
        if link != self._link:
            self.flush()  # a new subscription: what was published meanwhile may be lost
            self._link = link
        return link

    def get(self, store_id: str, terminal_id: str) -> dict[str, Any] | None:
        """The cached record, or None (missing, too old, or the cache is not trusted now)."""
        if self._trusted() is None:
            return None
        entry = self._entries.get((store_id, terminal_id))
        if entry is None:
            return None
        if self._clock() - entry[0] >= self.ttl_seconds:
            del self._entries[(store_id, terminal_id)]
            return None
        return entry[1]

    def begin(self) -> tuple[int | None, int]:
        """A ticket to take before reading a record from Redis."""
        return self._trusted(), self._epoch

    def put(self, store_id: str, terminal_id: str, record: dict[str, Any], ticket: tuple[int | None, int]) -> None:
        """Keep ``record`` read under ``ticket``, unless something was invalidated since."""
        link, epoch = ticket
        if link is None or link != self._trusted() or epoch != self._epoch:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare; a full cache just costs reads again
        self._entries[(store_id, terminal_id)] = (self._clock(), record)

    def invalidate(self, store_id: str, terminal_id: str) -> None:
        """Forget one terminal (its token was revoked)."""
        self._epoch += 1
        self._entries.pop((store_id, terminal_id), None)

    def flush(self) -> None:
        """Forget everything."""
        self._epoch += 1
        self._entries.clear()
