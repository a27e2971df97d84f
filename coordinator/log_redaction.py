"""Keep secrets out of every log line: an access logger that masks them, and a filter as defence in depth.

Tokens reach logs by two roads: request URLs (old websocket clients send ``?token=``, the H5
page's URL carries ``?qr=``, a waiter page's login link ``?key=``) and messages or tracebacks that
quote a header or a token. ``RedactingAccessLogger`` writes the access log from the request line
with those query values masked and never looks at a header but User-Agent; ``RedactionFilter``,
installed on every root handler by ``install_redaction``, masks whatever token shape is left in
any record of any logger (``token=…``, ``Bearer …``, ``session_token``, ``qr~…``/``h5~…``/``erp~…``,
``bearer.…`` subprotocols, ``redis://:password@``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from yarl import URL

MASK = "***"
#: Query parameters whose values are secrets.
SECRET_PARAMS = frozenset({"token", "key", "qr", "qr_token", "session_token", "access_token", "password"})

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b((?:qr_|session_|access_)?token|key|qr|password)=[^&\s\"'#;,]+"), rf"\1={MASK}"),
    (re.compile(r"(?i)\bBearer\s+[^\s\"',;]+"), f"Bearer {MASK}"),
    (re.compile(r"(?i)\bbearer\.[^\s\"',;]+"), f"bearer.{MASK}"),
    (re.compile(r"(?i)([\"']?(?:session_|qr_)?token[\"']?\s*[:=]\s*[\"'])[^\"']+"), rf"\1{MASK}"),
    (re.compile(r"\b(qr|h5|erp)~[^\s\"'&,;)\]}]+"), rf"\1~{MASK}"),
    (re.compile(r"(redis|rediss|unix)://([^:/@\s]*):[^@\s/]+@"), rf"\1://\2:{MASK}@"),
)


def redact(text: str) -> str:
    """``text`` with every token-shaped secret masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: URL) -> str:
    """The path and query of ``url`` with the values of secret parameters masked."""
    if not url.query:
        return url.raw_path
    query = [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in url.query.items()]
    return redact(str(url.with_query(query)))


class RedactionFilter(logging.Filter):
    """Mask secrets in a record's message and traceback (install on handlers: see install_redaction)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> RedactionFilter:
    """Put a RedactionFilter on every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    found = next((f for h in target.handlers for f in h.filters if isinstance(f, RedactionFilter)), None)
    redaction = found or RedactionFilter()
    for handler in target.handlers:
        if redaction not in handler.filters:
            handler.addFilter(redaction)
    return redaction


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without secrets: the request line with secret query values masked.

    Headers are never logged but User-Agent and Referer (itself redacted): not Authorization,
    Cookie or Sec-WebSocket-Protocol, which carry tokens.
    """

    def log(self, request: Any, response: Any, time: float) -> None:
        """Write one access log line for ``request``."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        self.logger.info(
            '%s "%s %s HTTP/%s.%s" %s %s %.6f "%s" "%s"',
            request.remote, request.method, redact_url(request.rel_url), request.version.major,
            request.version.minor, response.status, response.body_length, time,
            redact(request.headers.get("Referer", "-")), request.headers.get("User-Agent", "-"),
        )
