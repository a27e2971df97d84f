"""Issue 15 finding 2: no token in any log line; the websocket token can travel in Sec-WebSocket-Protocol.

The log scan runs a real ``tablelock serve`` at DEBUG and a real ``tablelock erp``, issues
terminal, H5 session and QR tokens through them (old ``?token=`` websocket clients included),
then reads both processes' logs for every secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import aiohttp
import pytest

from coordinator.log_redaction import (
    RedactingAccessLogger,
    RedactionFilter,
    install_redaction,
    redact,
)
from tests.support.app import ADMIN_TOKEN, bearer
from tests.support.processes import SECRET_KEY, start_coordinator

pytestmark = pytest.mark.security

SCENARIO = ('[[step]]\nterminal = "secondary1"\naction = "open_editor"\ntable = "T1"\n\n'
            '[[step]]\nterminal = "secondary1"\naction = "submit"\ntable = "T1"\n')


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """Logging does not depend on the Redis topology: the single node is enough."""
    return redis_single_url


async def _hello(ws: aiohttp.ClientWebSocketResponse) -> dict:
    message = await asyncio.wait_for(ws.receive_json(), 5)
    assert message["type"] == "hello", message
    return message


def _secrets_of(token: str) -> list[str]:
    """The parts of a token that must never be logged: the whole token and its secret tail."""
    return [token, token.rsplit("~", 1)[-1]]


async def test_no_token_reaches_the_coordinator_or_simulator_logs(redis_url, tmp_path, uid):
    """Terminal, H5, QR and admin tokens, sent as ?token=, Bearer and subprotocol, appear in no log line."""
    coordinator = start_coordinator(redis_url, tmp_path / "coord", env={"TABLELOCK_LOG_LEVEL": "DEBUG"})
    secrets: list[str] = [ADMIN_TOKEN, SECRET_KEY]
    try:
        store = f"logs-{uid}"
        api = f"{coordinator.url}/api/v1"
        async with aiohttp.ClientSession(headers=bearer(ADMIN_TOKEN)) as admin:
            assert (await admin.put(f"{api}/admin/stores/{store}", json={"name": "店"})).status == 200
            table = await (await admin.put(f"{api}/admin/stores/{store}/tables/T1", json={"name": "T1"})).json()
            terminals = [await (await admin.post(f"{api}/admin/stores/{store}/terminals",
                                                 json={"name": name, "master": master})).json()
                         for name, master in (("收银台", True), ("服务员A", False))]
        qr = table["qr_url"].split("qr=", 1)[1]
        tokens = [t["token"] for t in terminals]
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"{coordinator.url}/h5/?qr={qr}")).status == 200  # the page a phone opens
            session = await (await http.post(f"{api}/h5/sessions", json={"qr_token": qr})).json()
            h5 = session["session_token"]
            for token in (tokens[0], h5):  # an old client: the token in the URL (SPEC §7)
                async with http.ws_connect(f"{coordinator.ws_url}?token={token}") as ws:
                    await _hello(ws)
            async with http.ws_connect(coordinator.ws_url, protocols=("tablelock.v1", f"bearer.{h5}")) as ws:
                await _hello(ws)
            async with http.ws_connect(f"{coordinator.ws_url}?token=erp~{store}~nobody~forged-secret") as ws:
                assert (await ws.receive()).data == 4401
        secrets += [s for token in (*tokens, h5, qr) for s in _secrets_of(token)] + ["forged-secret"]

        token_file = tmp_path / "terminals.json"
        token_file.write_text(json.dumps({"terminals": [
            {"token": tokens[0], "name": "收银台", "master": True}, {"token": tokens[1], "name": "服务员A"}]}))
        scenario = tmp_path / "scenario.toml"
        scenario.write_text(SCENARIO)
        erp = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "coordinator.cli", "erp", "--coordinator", coordinator.url, "--store", store,
            "--token-file", str(token_file), "--db", str(tmp_path / "erp.sqlite"), "--seed",
            "--scenario", str(scenario), "--pages-port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(erp.communicate(), 60)
        assert erp.returncode == 0, (out + err).decode()
        erp_log = err.decode()  # stdout is what the operator is shown (the waiter links), stderr the log
    finally:
        coordinator.stop()
    coordinator_log = coordinator.log.read_text()
    assert "GET /api/v1/ws" in coordinator_log and "token=***" in coordinator_log  # the access log was on
    assert "scenario done" in out.decode()  # the simulator ran its terminals through the coordinator
    for secret in secrets:
        assert secret not in coordinator_log, f"a secret in the coordinator log: {secret[:12]}…"
        assert secret not in erp_log, f"a secret in the simulator log: {secret[:12]}…"


async def test_the_websocket_selects_tablelock_v1_when_offered_a_bearer_subprotocol(client, shop):
    """A token offered as ``bearer.<token>`` authenticates; the server answers with ``tablelock.v1`` only."""
    async with client.ws_connect("/api/v1/ws", protocols=("tablelock.v1", f"bearer.{shop.a}")) as ws:
        hello = await _hello(ws)
        assert ws.protocol == "tablelock.v1"
    async with client.ws_connect("/api/v1/ws", protocols=("tablelock.v1", "bearer.erp~x~y~wrong")) as ws:
        assert (await ws.receive()).data == 4401


def test_the_filter_masks_every_token_shape(caplog):
    """Any logger's record with token=, Bearer, session_token, qr~/h5~/erp~ or a Redis password is masked."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", (
        "GET /ws?token=erp~s~T~sekret&since=1 Authorization: Bearer adminsekret",
        '{"session_token": "h5~s~T1~sid~1~macsekret"} qr~s~T1~qrsekret bearer.erp~s~T~protosekret '
        "redis://:redissekret@127.0.0.1:1",
    ), None)
    assert RedactionFilter().filter(record)
    assert "sekret" not in record.getMessage(), record.getMessage()
    assert redact("nothing secret here") == "nothing secret here"


def test_install_puts_the_filter_on_root_handlers_once():
    """install_redaction is idempotent and covers records of every logger that propagates to root."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        first, second = install_redaction(), install_redaction()
        assert first is second and handler.filters.count(first) == 1
    finally:
        root.removeHandler(handler)


async def test_the_access_logger_masks_query_secrets_and_logs_no_header(client, caplog):
    """The access line keeps path and status but masks ?token=/?qr=/?key= and never writes Authorization."""
    logger = logging.getLogger("test.access")
    access = RedactingAccessLogger(logger, "")

    class Request:
        remote, method = "127.0.0.1", "GET"
        rel_url = __import__("yarl").URL("/api/v1/ws?token=erp~s~T~sekret&since=3&qr=qr~a~b~c&key=k")
        version = aiohttp.HttpVersion11
        headers = {"Authorization": "Bearer adminsekret", "User-Agent": "ua"}

    class Response:
        status, body_length = 101, 0

    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(Request(), Response(), 0.01)
    line = caplog.records[-1].getMessage()
    assert "/api/v1/ws?token=***&since=3&qr=***&key=***" in line and " 101 " in line
    assert "sekret" not in line and "Authorization" not in line
