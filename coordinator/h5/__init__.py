"""The diner's flows (SPEC §5 H5 session) as a service callable without HTTP.

    service   H5Service: the one entry point (sessions, table view, menu, dishes, checkout)
    table     Diner (a session's scope) and the table's open orders
    erp_link  asking the store's master ERP over RPC, and keeping its order answers
    menu      the menu, cached
    addons    dishes added through the ERP, idempotent on request_id
    checkout  pull the order from the ERP, take the payment lock bound to it; give it back

There is no H5 completion (SPEC §9): provider payments live in ``coordinator/payments``.

Layer: above ``store`` and ``realtime`` (engine, rpc), below ``api`` (``api/h5.py`` parses, calls,
shapes the reply). Every error raised here is a ``core.errors`` one, and any lock it carries is
already in the H5 viewer form.
"""

from coordinator.h5.service import H5Service
from coordinator.h5.table import Diner

__all__ = ["Diner", "H5Service"]
