"""Per-store configuration (SPEC §6): the full config, and the admin's PATCH derived from it.

Each key's type and range is written once, on ``StoreConfig``; the patch takes the same fields
as optional, and a bad value in it names its key and range for the store admin.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from coordinator.core.models.base import JSON_INTEGER, Body
from coordinator.core.rules import Kind


class StoreConfig(BaseModel):
    """Per-store configuration (SPEC §6), with the admin-settable ranges."""

    model_config = ConfigDict(extra="forbid")
    strong_link_enabled: bool = True
    h5_payment_lock_seconds: Annotated[int, Field(ge=1, le=300), JSON_INTEGER] = 15
    erp_payment_lock_seconds: Annotated[int, Field(ge=5, le=3600), JSON_INTEGER] = 180
    order_lock_seconds: Annotated[int, Field(ge=5, le=3600), JSON_INTEGER] = 300
    presettle_lock_seconds: Annotated[int, Field(ge=30, le=86400), JSON_INTEGER] = 1800
    erp_disconnect_grace_seconds: Annotated[int, Field(ge=0, le=600), JSON_INTEGER] = 30
    erp_rpc_timeout_ms: Annotated[int, Field(ge=100, le=30000), JSON_INTEGER] = 3000
    #: Payments (SPEC §9): the provider order's life, and whether surplus money is refunded by itself.
    h5_payment_window_seconds: Annotated[int, Field(ge=60, le=900), JSON_INTEGER] = 180
    auto_refund_surplus: bool = True

    def lock_seconds(self, kind: Kind, role: str) -> int:
        """The duration of a new lock of ``kind`` taken by ``role``."""
        if kind is Kind.PAYMENT:
            return self.h5_payment_lock_seconds if role == "h5" else self.erp_payment_lock_seconds
        return self.order_lock_seconds if kind is Kind.ORDER else self.presettle_lock_seconds


def _optional_fields(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s fields, each with its own type and constraints, made optional (default None)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation  # type: ignore[misc]
        fields[name] = (kind | None, None)
    return fields


#: PATCH .../config: any subset of the configuration (None: leave the key as it is).
StoreConfigPatch = create_model(
    "StoreConfigPatch", __base__=Body, __doc__="PATCH .../config: any subset of the configuration.",
    __module__=__name__, **_optional_fields(StoreConfig),
)


def config_rule(field: str) -> str:
    """What a store admin must enter for a configuration key, e.g. "… must be between 1 and 300 seconds"."""
    if StoreConfig.model_fields[field].annotation is bool:
        return f"{field} must be true or false"
    bounds = {type(m).__name__: m for m in StoreConfig.model_fields[field].metadata}
    unit = "ms" if field.endswith("_ms") else "seconds"
    return f"{field} must be between {bounds['Ge'].ge} and {bounds['Le'].le} {unit}"


class StoreConfigChange(StoreConfigPatch):  # type: ignore[misc,valid-type]
    """PATCH .../config: any subset of the configuration; a bad value names its key and range."""

    @field_validator("*", mode="wrap")
    @classmethod
    def _explain(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError:
            got = json.dumps(value if isinstance(value, (bool, int, float)) else str(value)[:40], ensure_ascii=False)
            raise PydanticCustomError(
                "config_out_of_range", "{rule} (got {got})", {"rule": config_rule(info.field_name), "got": got}
            ) from None
