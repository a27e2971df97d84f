"""Payment provider adapters: one interface (``base.PaymentProvider``), one module per provider."""

from .base import (
    Ack,
    CreatedOrder,
    CreateOrder,
    InvalidNotification,
    Notification,
    PaymentNotification,
    PaymentProvider,
    ProviderError,
    ProviderPayment,
    ProviderRejected,
    ProviderUnreachable,
    Refund,
    RefundNotification,
)
from .config import AlipayConfig, ProviderConfig, WechatPayConfig, build_provider

__all__ = [
    "Ack", "AlipayConfig", "CreateOrder", "CreatedOrder", "InvalidNotification", "Notification",
    "PaymentNotification", "PaymentProvider", "ProviderConfig", "ProviderError", "ProviderPayment",
    "ProviderRejected", "ProviderUnreachable", "Refund", "RefundNotification", "WechatPayConfig",
    "build_provider",
]
