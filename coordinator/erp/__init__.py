"""An ERP terminal's lock requests (SPEC §5 "ERP terminal") as a service callable without HTTP.

    locks   ErpLocks: take, renew, release, check, complete — the one copy of these flows

Both transports call it: ``api/erp.py`` (HTTP) and ``api/ws_commands.py`` (the websocket commands
of docs/protocol.md A15), so a request gets the same answer and the same errors either way.

Layer: above ``store`` and ``payments`` (a force first asks about a diner's payment in flight),
below ``api``. Errors are ``core.errors`` ones; a lock a denial carries is in the stored form
(the transport shows it in the caller's form, ``api/routing.show_lock``).
"""

from coordinator.erp.locks import ErpLocks

__all__ = ["ErpLocks"]
