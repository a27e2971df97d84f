"""The SPEC §4 error body, as a model for the OpenAPI document (``core/errors.py`` builds it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from coordinator.core.models.locks import Lock
from coordinator.core.models.orders import Order


class ErrorDetail(BaseModel):
    """The SPEC error object."""

    code: str
    message: str
    message_en: str
    force_allowed: bool
    lock: Lock | None
    order: Order | None
    details: list[Any] | None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body."""

    error: ErrorDetail
