"""The OpenAPI 3 document, generated from the declared endpoints and their pydantic models."""

from __future__ import annotations

import re
from typing import Any, Iterable

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from coordinator.api.routing import PREFIX, Endpoint
from coordinator.core.models import ErrorBody

_PARAM = re.compile(r"{(\w+)}")
_STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No content", 400: "Validation error", 401: "Unauthenticated",
    403: "Forbidden", 404: "Not found", 409: "Conflict", 413: "Payload too large",
    429: "Rate limited", 503: "Unavailable",
}


def document(endpoints: Iterable[Endpoint], *, title: str = "tablelock", version: str = "1") -> dict[str, Any]:
    """Build the document: one operation per endpoint, schemas under components."""
    endpoints = list(endpoints)
    models: set[type[BaseModel]] = {ErrorBody}
    for e in endpoints:
        models.update(m for m in (e.body, e.query, *e.responses.values()) if isinstance(m, type))
    _, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(PREFIX + e.path, {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(e: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": e.summary,
        "operationId": e.handler.__name__,
        "tags": [e.tag],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
            for name in _PARAM.findall(e.path)
        ],
        "responses": {},
    }
    if e.auth != ("public",):
        op["security"] = [{"bearer": []}]
        op["description"] = "Callers: " + ", ".join(e.auth)
    if e.query is not None:
        for name, field in e.query.model_fields.items():
            op["parameters"].append(
                {"name": name, "in": "query", "required": field.is_required(),
                 "schema": e.query.model_json_schema()["properties"][name]}
            )
    if e.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(e.body)}}}
    for status, model in e.responses.items():
        if model is None:
            op["responses"][str(status)] = {"description": _STATUS_TEXT.get(status, "")}
        elif isinstance(model, str):
            op["responses"][str(status)] = {"description": "", "content": {model: {"schema": {"type": "string", "format": "binary"}}}}
        else:
            op["responses"][str(status)] = {"description": _STATUS_TEXT.get(status, ""), "content": {"application/json": {"schema": _ref(model)}}}
    errors = set(e.errors) | {400, 404, 413, 429, 503}
    if e.auth != ("public",):
        errors |= {401, 403}
    for status in sorted(errors):
        op["responses"][str(status)] = {
            "description": _STATUS_TEXT.get(status, ""),
            "content": {"application/json": {"schema": _ref(ErrorBody)}},
        }
    return op


def _path_schema(name: str) -> dict[str, Any]:
    if name == "kind":
        return {"type": "string", "enum": ["order", "presettle", "payment"]}
    return {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
