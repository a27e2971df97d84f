"""Per-provider settings a store admin pastes in, and ``build_provider`` to turn them into an adapter.

Secrets are ``SecretStr``: they never appear in a repr, a log line or an API answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .base import PaymentProvider

_URL = Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=255)]


class _Config(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class WechatPayConfig(_Config):
    """WeChat Pay API v3 merchant settings (商户平台 → API安全)."""

    provider: Literal["wechatpay"] = "wechatpay"
    mchid: Annotated[str, Field(pattern=r"^[0-9]{6,32}$")]
    appid: Annotated[str, Field(min_length=1, max_length=32)]
    merchant_serial_no: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{8,64}$")]
    merchant_private_key: SecretStr
    apiv3_key: SecretStr
    platform_serial_no: Annotated[str, Field(min_length=8, max_length=64)]
    platform_public_key: Annotated[str, Field(min_length=64)]
    base_url: _URL = "https://api.mch.weixin.qq.com"

    @field_validator("apiv3_key")
    @classmethod
    def _apiv3_key_is_32_bytes(cls, v: SecretStr) -> SecretStr:
        # AEAD_AES_256_GCM needs exactly 32 bytes; WeChat's APIv3 key is 32 ASCII characters.
        if len(v.get_secret_value().encode()) != 32:
            raise ValueError("apiv3_key must be 32 bytes")
        return v


class AlipayConfig(_Config):
    """Alipay open platform application settings (开放平台 → 应用 → 开发设置)."""

    provider: Literal["alipay"] = "alipay"
    app_id: Annotated[str, Field(pattern=r"^[0-9]{8,32}$")]
    app_private_key: SecretStr
    alipay_public_key: Annotated[str, Field(min_length=64)]
    gateway_url: _URL = "https://openapi.alipay.com/gateway.do"
    #: The partner id (``seller_id``, 2088…) notifications must name; empty skips the check.
    seller_id: str = ""


ProviderConfig = Annotated[WechatPayConfig | AlipayConfig, Field(discriminator="provider")]


def build_provider(
    config: WechatPayConfig | AlipayConfig,
    *,
    http_timeout: float,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.time,
) -> PaymentProvider:
    """Return the adapter for ``config``; it owns an HTTP session unless ``session`` is given."""
    # Imported here because each adapter module imports its config class from this one.
    if isinstance(config, WechatPayConfig):
        from .wechatpay import WechatPay

        return WechatPay(config, http_timeout=http_timeout, session=session, clock=clock)
    from .alipay import Alipay

    return Alipay(config, http_timeout=http_timeout, session=session, clock=clock)
