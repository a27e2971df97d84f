"""Admin endpoints for payments (SPEC §9): provider settings per store, a connection test,
the payment list, payment reconciliation, a daily summary and a CSV export.

Choices where SPEC is silent:
- ``PUT .../payments/providers/{provider}`` takes the provider's settings (``WechatPayConfig`` /
  ``AlipayConfig`` fields). Secrets are write-only: ``GET`` shows ``{"set": true}`` in their place,
  and a ``PUT`` that leaves a secret out keeps the stored one (so an admin can change the gateway
  URL without pasting the private key again).
- Windows are ``from``/``to`` in Unix ms (default: the 24 hours before now; 31 days for the summary
  and the export); days of the summary are calendar days at ``utc_offset_minutes`` (default 480, China).
- Payment reconciliation is its own endpoint beside SPEC §5's order reconciliation.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, create_model

from coordinator.api.routing import Call, Reply, Router, bad_request
from coordinator.core.errors import NotFound, ValidationFailed
from coordinator.core.models import ReconciliationQuery, TimeBound
from coordinator.payments import reports
from coordinator.payments.providers import ProviderConfig, ProviderError, ProviderRejected, ProviderUnreachable
from coordinator.payments.records import PaymentRecord
from coordinator.payments.vault import PROVIDERS, ProviderNotConfigured, plain, redacted

router = Router("admin")
ADMIN = ("admin",)
_PROVIDER = "/admin/stores/{store_id}/payments/providers/{provider}"
_CONFIG = TypeAdapter(ProviderConfig)
DAY_MS = 86_400_000


class ProviderSettingsView(BaseModel):
    """A store's settings of one provider, secrets shown only as set or not."""

    provider: str
    settings: dict[str, Any]
    notify_url: str


class ProviderTest(BaseModel):
    """POST .../test: whether the provider answered the query API with these settings."""

    ok: bool
    provider: str
    message: str


class PaymentList(BaseModel):
    """GET .../payments: every provider payment of the window, oldest first."""

    payments: list[PaymentRecord]


class _SummaryFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The store's offset from UTC: days are its calendar days (China Standard Time by default).
    utc_offset_minutes: Annotated[int, Field(ge=-720, le=840)] = 480


SummaryQuery = create_model("SummaryQuery", __base__=_SummaryFilters,
                            **{"from": (TimeBound | None, None), "to": (TimeBound | None, None)})


def _provider(call: Call) -> str:
    provider = call.path["provider"]
    if provider not in PROVIDERS:
        raise NotFound()
    return provider


async def _window(call: Call, default_ms: int) -> tuple[int, int]:
    now = await call.services.engine.now()
    end = getattr(call.query, "to", None) or now
    start = getattr(call.query, "from", None)
    return (end - default_ms if start is None else start), end


async def _records(call: Call, default_ms: int = DAY_MS) -> list[PaymentRecord]:
    store_id = call.path["store_id"]
    await call.services.directory.store(store_id)
    start, end = await _window(call, default_ms)
    return await call.services.payments.ledger.list(store_id, since_ms=start, until_ms=end)


def _view(call: Call, store_id: str, config: Any) -> ProviderSettingsView:
    return ProviderSettingsView(provider=config.provider, settings=redacted(config),
                                notify_url=call.services.payments.service.notify_url(store_id, config.provider))


@router.route("PUT", _PROVIDER, auth=ADMIN, responses={200: ProviderSettingsView}, errors=(400,))
async def put_provider(call: Call) -> Reply:
    """Set the store's settings of a provider (secrets left out keep their stored values)."""
    store_id, provider = call.path["store_id"], _provider(call)
    await call.services.directory.store(store_id)
    vault = call.services.payments.vault
    try:
        body = json.loads(await call.request.read() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValidationFailed(details=[{"loc": ["body"], "msg": "must be a JSON object", "type": "dict_type"}])
    try:
        stored = plain(await vault.get(store_id, provider))
    except ProviderNotConfigured:
        stored = {}
    merged = {**stored, **body, "provider": provider}
    try:
        config = _CONFIG.validate_python(
            {k: SecretStr(v) if isinstance(v, str) and k in _secret_fields(provider) else v
             for k, v in merged.items()})
    except ValidationError as exc:
        raise bad_request(exc) from None
    await vault.put(store_id, config)
    return Reply(200, _view(call, store_id, config))


def _secret_fields(provider: str) -> set[str]:
    from coordinator.payments.providers import AlipayConfig, WechatPayConfig

    model = WechatPayConfig if provider == "wechatpay" else AlipayConfig
    return {name for name, f in model.model_fields.items() if f.annotation is SecretStr}


@router.route("GET", _PROVIDER, auth=ADMIN, responses={200: ProviderSettingsView})
async def get_provider(call: Call) -> Reply:
    """The store's settings of a provider; secrets only as ``{"set": true}``."""
    store_id, provider = call.path["store_id"], _provider(call)
    await call.services.directory.store(store_id)
    try:
        config = await call.services.payments.vault.get(store_id, provider)
    except ProviderNotConfigured:
        raise NotFound() from None
    return Reply(200, _view(call, store_id, config))


@router.route("POST", _PROVIDER + "/test", auth=ADMIN, responses={200: ProviderTest})
async def test_provider(call: Call) -> Reply:
    """Call the provider's query API with the stored settings (a trade it does not know is fine)."""
    store_id, provider = call.path["store_id"], _provider(call)
    await call.services.directory.store(store_id)
    try:
        adapter = await call.services.payments.vault.adapter(store_id, provider)
    except ProviderNotConfigured:
        raise NotFound() from None
    probe = f"TLPROBE{await call.services.engine.now()}"
    try:
        await adapter.query(probe)
    except ProviderUnreachable as exc:
        return Reply(200, ProviderTest(ok=False, provider=provider, message=f"unreachable: {exc}"[:200]))
    except ProviderRejected as exc:
        # Signed request accepted, the probe trade unknown: the credentials work.
        ok = "NOT_EXIST" in exc.code.upper() or "NOT_FOUND" in exc.code.upper()
        return Reply(200, ProviderTest(ok=ok, provider=provider, message=f"{exc.code}: {exc.message}"[:200]))
    except ProviderError as exc:
        return Reply(200, ProviderTest(ok=False, provider=provider, message=str(exc)[:200]))
    return Reply(200, ProviderTest(ok=True, provider=provider, message="ok"))


@router.route("GET", "/admin/stores/{store_id}/payments", auth=ADMIN, query=ReconciliationQuery,
              responses={200: PaymentList})
async def list_payments(call: Call) -> Reply:
    """Every provider payment of the window (default: the last 24 hours), oldest first."""
    return Reply(200, PaymentList(payments=await _records(call)))


@router.route("GET", "/admin/stores/{store_id}/payments/reconciliation", auth=ADMIN, query=ReconciliationQuery,
              responses={200: reports.PaymentReconciliation})
async def payment_reconciliation(call: Call) -> Reply:
    """Surplus payments with their refund states, and "paid, ERP not yet confirmed"."""
    records = await _records(call)
    return Reply(200, reports.reconciliation(records))


@router.route("GET", "/admin/stores/{store_id}/payments/summary", auth=ADMIN, query=SummaryQuery,
              responses={200: reports.PaymentSummary})
async def payment_summary(call: Call) -> Reply:
    """Per day and provider: orders paid vs money received, surplus and refunds (default: 31 days)."""
    return Reply(200, reports.summary(await _records(call, 31 * DAY_MS), call.query.utc_offset_minutes))


@router.route("GET", "/admin/stores/{store_id}/payments/export.csv", auth=ADMIN, query=ReconciliationQuery,
              responses={200: "text/csv"})
async def export_payments(call: Call) -> web.Response:
    """Every provider payment of the window as CSV (default: 31 days)."""
    records = await _records(call, 31 * DAY_MS)
    return web.Response(text=reports.to_csv(records), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="payments-{call.path["store_id"]}.csv"'})
