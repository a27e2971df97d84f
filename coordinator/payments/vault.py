"""Provider settings per store, kept encrypted in Redis; and the adapters built from them.

Secrets (merchant private keys, the APIv3 key) are write-only: they are stored as one Fernet token
keyed from ``TABLELOCK_SECRET_KEY`` (so a Redis dump alone does not reveal them), never returned by
the admin API (it says which are set), and never logged (pydantic ``SecretStr``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr, TypeAdapter

from coordinator.payments.providers import PaymentProvider, ProviderConfig, build_provider
from coordinator.store import keys

PROVIDERS = ("wechatpay", "alipay")
_CONFIG = TypeAdapter(ProviderConfig)


class ProviderNotConfigured(Exception):
    """The store has no settings for this provider."""


def fernet_for(secret_key: str) -> Fernet:
    """The Fernet of the process secret key (a derived key: the secret key is no Fernet key itself)."""
    digest = hashlib.sha256(b"tablelock/payments/v1\0" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def plain(config: Any) -> dict[str, Any]:
    """The config with its secrets revealed, for encryption only."""
    out = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        out[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return out


def redacted(config: Any) -> dict[str, Any]:
    """The config as the admin API shows it: each secret replaced by whether it is set."""
    out: dict[str, Any] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        out[name] = {"set": bool(value.get_secret_value())} if isinstance(value, SecretStr) else value
    return out


class ProviderVault:
    """Encrypted provider settings of every store, and a cache of the adapters built from them."""

    def __init__(self, redis: Any, secret_key: str, *, http_timeout: float = 5.0) -> None:
        self.redis = redis
        self._fernet = fernet_for(secret_key)
        self._http_timeout = http_timeout
        self._adapters: dict[tuple[str, str], tuple[str, PaymentProvider]] = {}
        self._lock = asyncio.Lock()

    async def put(self, store_id: str, config: Any) -> None:
        """Store (replace) the store's settings of ``config.provider``."""
        token = self._fernet.encrypt(json.dumps(plain(config)).encode())
        await self.redis.hset(keys.payment_providers(store_id), config.provider, token)

    async def get(self, store_id: str, provider: str) -> Any:
        """The store's settings of ``provider`` (secrets as SecretStr)."""
        raw = await self.redis.hget(keys.payment_providers(store_id), provider)
        if raw is None:
            raise ProviderNotConfigured(provider)
        try:
            return _CONFIG.validate_json(self._fernet.decrypt(raw))
        except InvalidToken:
            # Written under another secret key: as good as unset; the admin enters it again.
            raise ProviderNotConfigured(provider) from None

    async def configured(self, store_id: str) -> list[str]:
        """The providers the store has settings for."""
        return sorted(name.decode() for name in await self.redis.hkeys(keys.payment_providers(store_id)))

    async def adapter(self, store_id: str, provider: str) -> PaymentProvider:
        """The adapter for the store's current settings (rebuilt when they change)."""
        raw = await self.redis.hget(keys.payment_providers(store_id), provider)
        if raw is None:
            raise ProviderNotConfigured(provider)
        digest = hashlib.sha256(raw).hexdigest()
        async with self._lock:
            cached = self._adapters.get((store_id, provider))
            if cached and cached[0] == digest:
                return cached[1]
            config = await self.get(store_id, provider)
            adapter = build_provider(config, http_timeout=self._http_timeout)
            self._adapters[(store_id, provider)] = (digest, adapter)
        if cached:
            await cached[1].aclose()
        return adapter

    async def aclose(self) -> None:
        """Close every adapter's HTTP session."""
        for _, adapter in self._adapters.values():
            await adapter.aclose()
        self._adapters.clear()
