"""H5Service called directly, without HTTP: real Redis, the coordinator's RPC router, and the ERP
simulator's master terminal (cashier) on a real websocket as the ERP.

The HTTP layer (auth, rate limits, body parsing) is not in the path here: these tests pin the
diner's flows themselves — menu, dishes, checkout, payment — as ``api/h5.py`` calls them.
"""

from __future__ import annotations

import pytest

from coordinator.app import build_app
from coordinator.core.errors import Forbidden, LockConflict, Unauthenticated, ValidationFailed
from coordinator.core.models import ItemLine, ItemsRequest
from coordinator.h5 import Diner, H5Service
from coordinator.services import SERVICES
from tests.support.restaurant import FIRST_TOTAL, MENU, Restaurant


@pytest.fixture
async def server(aiohttp_server, settings):
    """The coordinator app on a real port, for the ERP simulator's terminals to connect to."""
    return await aiohttp_server(build_app(settings))


@pytest.fixture
def coordinator_url(server) -> str:
    """The URL ``restaurant`` seeds and connects its terminals to (this module's server)."""
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def h5(server) -> H5Service:
    """An H5Service over the running app's Redis, engine, directory, auth and RPC router."""
    svc = server.app[SERVICES]
    return H5Service(svc.redis, svc.engine, svc.directory, svc.auth, svc.rpc)


@pytest.fixture
def diner(restaurant: Restaurant) -> Diner:
    """A diner at table T1 of the seeded store."""
    return Diner(store_id=restaurant.store_id, table_id="T1", session_id="sess-service-test")


def _items(request_id: str, *lines: tuple[str, int]) -> ItemsRequest:
    return ItemsRequest(items=[ItemLine(sku=sku, qty=qty) for sku, qty in lines], request_id=request_id)


async def test_open_session_accepts_the_tables_qr_and_refuses_a_forged_one(h5: H5Service, restaurant: Restaurant):
    """A genuine QR code opens a session on its table; a tampered one is Unauthenticated."""
    created = await h5.open_session(restaurant.qr)
    assert (created.store_id, created.table_id) == (restaurant.store_id, "T1") and created.session_token
    with pytest.raises(Unauthenticated):
        await h5.open_session(restaurant.qr[:-2] + ("AA" if not restaurant.qr.endswith("AA") else "BB"))


async def test_table_view_shows_the_tables_order_and_config(h5: H5Service, diner: Diner, restaurant: Restaurant):
    """The table view carries the table's open order (the ERP's o1) and the H5 config."""
    view = await h5.table(diner)
    assert view.order is not None and view.order.order_id == restaurant.order_id
    assert view.order.total_cents == FIRST_TOTAL and view.locks == []
    assert view.config.strong_link_enabled is True


async def test_menu_comes_from_the_erp(h5: H5Service, diner: Diner):
    """The menu is the ERP database's dishes, asked over menu.list."""
    menu = await h5.menu(diner)
    assert {(i.sku, i.name, i.unit_price_cents) for i in menu.items} == set(MENU)


async def test_add_items_goes_through_the_erp_once_per_request_id(h5: H5Service, diner: Diner, restaurant: Restaurant):
    """Dishes land in the ERP's order once; the same request_id again replays the same order."""
    first = await h5.add_items(diner, _items("r-1", ("rice", 2)))
    again = await h5.add_items(diner, _items("r-1", ("rice", 2)))
    assert first == again and first.order_id == restaurant.order_id
    erp = restaurant.erp_order()
    assert erp["version"] == first.version == 2
    assert [(l["sku"], l["qty"]) for l in erp["items"] if l["source"] == "h5"] == [("rice", 2)]
    assert first.total_cents == FIRST_TOTAL + 2 * 300


async def test_a_request_id_reused_with_other_items_is_refused(h5: H5Service, diner: Diner):
    """The same request_id with other dishes is a client mistake, not a second add."""
    await h5.add_items(diner, _items("r-2", ("rice", 1)))
    with pytest.raises(ValidationFailed) as caught:
        await h5.add_items(diner, _items("r-2", ("tea", 1)))
    assert caught.value.details[0]["type"] == "request_id_reused"


async def test_checkout_pulls_the_erps_latest_version_and_locks_it(h5: H5Service, diner: Diner, restaurant: Restaurant):
    """A change the ERP never pushed is pulled at checkout; the payment lock is bound to it."""
    restaurant.db.add_items(restaurant.order_id, [{"sku": "greens", "qty": 1}])  # in the ERP only
    grant = await h5.checkout(diner)
    assert grant.order.version == 2 and grant.order.total_cents == FIRST_TOTAL + 2800
    assert grant.lock.kind.value == "payment" and grant.lock.version == 2 and grant.lock.token
    assert grant.lock.holder.model_dump() == {"role": "h5", "session_id": diner.session_id}


async def test_checkout_with_force_is_forbidden_and_takes_nothing(h5: H5Service, diner: Diner, restaurant: Restaurant):
    """H5 never forces (SPEC §2): force is Forbidden before anything is pulled or locked."""
    with pytest.raises(Forbidden):
        await h5.checkout(diner, force=True)
    assert (await h5.table(diner)).locks == []


async def test_checkout_while_a_waiter_edits_is_refused_in_the_h5_view(h5: H5Service, diner: Diner, restaurant: Restaurant):
    """A waiter's order lock refuses the checkout; the lock shown names no terminal."""
    await restaurant.waiter.open_editor(restaurant.order_id)
    with pytest.raises(LockConflict) as caught:
        await h5.checkout(diner)
    assert caught.value.code == "ORDER_LOCKED" and not caught.value.force_allowed
    assert caught.value.lock["holder"] == {"role": "erp", "is_me": False}
    assert "token" not in caught.value.lock


async def test_the_h5_service_offers_no_completion(h5: H5Service):
    """No H5 flow marks an order paid (SPEC §9); the completion tests moved to tests/test_payments.py (provider-confirmed)."""
    assert not hasattr(h5, "pay")


async def test_cancel_checkout_gives_the_lock_back_once(h5: H5Service, diner: Diner):
    """Cancelling releases the payment lock; cancelling again releases nothing."""
    grant = await h5.checkout(diner)
    assert (await h5.cancel_checkout(diner, grant.lock.token)).released is True
    assert (await h5.cancel_checkout(diner, grant.lock.token)).released is False
    assert (await h5.table(diner)).locks == []
