"""admin endpoints of SPEC §5."""

from __future__ import annotations

from .routing import Router

router = Router("admin")
