"""One HTTP exchange with a provider, mapping every transport failure to ``ProviderUnreachable``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from .base import ProviderUnreachable

log = logging.getLogger(__name__)

#: A provider answer larger than this is not an answer we understand.
MAX_RESPONSE_BYTES = 1 << 20


@dataclass(frozen=True)
class Reply:
    """A provider's raw HTTP answer (status below 500)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Transport:
    """An aiohttp session with one total timeout, owned or borrowed."""

    def __init__(self, *, timeout: float, session: aiohttp.ClientSession | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owned = session is None

    async def send(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None, label: str
    ) -> Reply:
        """Send one request; raise ``ProviderUnreachable`` on network errors, timeouts and 5xx."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(
                method, url, headers=dict(headers), data=body, timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                data = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                status, resp_headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # ``label`` is the API name, never the URL: Alipay URLs carry signed parameters.
            log.warning("provider %s unreachable: %s", label, type(exc).__name__)
            raise ProviderUnreachable(f"{label}: {type(exc).__name__}") from exc
        if status >= 500:
            log.warning("provider %s answered %d", label, status)
            raise ProviderUnreachable(f"{label}: HTTP {status}")
        if len(data) > MAX_RESPONSE_BYTES:
            raise ProviderUnreachable(f"{label}: oversized answer")
        return Reply(status, resp_headers, data)

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None
