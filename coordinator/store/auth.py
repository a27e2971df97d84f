"""Who is asking: admin, ERP terminal or H5 session, and the tokens that prove it.

Token shapes (``~`` never occurs in ids, so the parts split unambiguously):

    admin      the ``admin_token`` of the process settings
    terminal   erp~<store_id>~<terminal_id>~<secret>       secret stored as SHA-256, revocable
    QR         qr~<store_id>~<table_id>~<mac>               HMAC with the store's rotatable qr_secret
    H5 session h5~<store_id>~<table_id>~<session_id>~<expires_at ms>~<since seq>~<mac>   HMAC with secret_key

An H5 session token carries the store's event seq when the session began (``since_seq``): the
session reads nothing of what happened at its table before it (invariant 11, realtime/session.py).

Every comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Literal

from coordinator.core.errors import Unauthenticated
from coordinator.store import keys
from coordinator.store.auth_cache import TerminalCache
from coordinator.store.follow import followed_table

Role = Literal["admin", "erp", "h5"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and its scope."""

    role: Role
    store_id: str | None = None
    terminal_id: str | None = None
    name: str | None = None
    master: bool = False
    session_id: str | None = None
    table_id: str | None = None
    expires_at: int | None = None
    #: H5 only: the store's event seq when the session began; older events are an earlier party's.
    since_seq: int = 0
    #: ERP only: the stored hash of the token's secret, which the lock scripts check again (lib.lua authentic).
    credential: str | None = field(default=None, repr=False, compare=False)

    def holder(self) -> dict[str, Any]:
        """The holder dict this caller puts on the locks it takes."""
        if self.role == "erp":
            return {"role": "erp", "terminal_id": self.terminal_id, "name": self.name}
        if self.role == "h5":
            return {"role": "h5", "session_id": self.session_id}
        return {"role": "admin"}


def _mac(key: bytes, message: str, length: int = 32) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:length]


def hash_secret(secret: str) -> str:
    """The stored form of a terminal token's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_terminal_token(store_id: str, terminal_id: str) -> tuple[str, str]:
    """A fresh terminal token and the hash to store for it."""
    secret = secrets.token_urlsafe(32)
    return f"erp~{store_id}~{terminal_id}~{secret}", hash_secret(secret)


def qr_token(qr_secret: str, store_id: str, table_id: str) -> str:
    """The token a table's QR code carries."""
    return f"qr~{store_id}~{table_id}~{_mac(qr_secret.encode(), f'{store_id}~{table_id}')}"


def parse_qr_token(token: str) -> tuple[str, str, str]:
    """Split a QR token into (store_id, table_id, mac); raises Unauthenticated if malformed."""
    parts = token.split("~")
    if len(parts) != 4 or parts[0] != "qr":
        raise Unauthenticated()
    return parts[1], parts[2], parts[3]


def verify_qr_token(token: str, qr_secret: str) -> tuple[str, str]:
    """(store_id, table_id) of a genuine QR token signed with ``qr_secret``."""
    store_id, table_id, mac = parse_qr_token(token)
    if not hmac.compare_digest(mac, _mac(qr_secret.encode(), f"{store_id}~{table_id}")):
        raise Unauthenticated()
    return store_id, table_id


class Authenticator:
    """Turns bearer tokens into Principals."""

    def __init__(self, redis: Any, *, admin_token: str, secret_key: str, session_ttl_ms: int) -> None:
        self.redis = redis
        self._admin = admin_token.encode()
        self._key = secret_key.encode()
        self.session_ttl_ms = session_ttl_ms
        #: Terminal records (auth_cache.py); trusted once realtime/runtime.py links it to pub/sub.
        self.cache = TerminalCache()
        #: A local reading of the Redis clock (realtime/sweeper.py RedisClock), set by the runtime:
        #: an H5 session's expiry is then checked without a TIME round trip. None: ask ``now``.
        self.clock: Callable[[], int | None] | None = None

    def new_session(self, store_id: str, table_id: str, now: int, since_seq: int = 0) -> tuple[str, str, int]:
        """A session token bound to one table and begun at event ``since_seq``: (token, session_id, expires_at)."""
        session_id = secrets.token_urlsafe(12).replace("~", "-")
        expires_at = now + self.session_ttl_ms
        payload = f"h5~{store_id}~{table_id}~{session_id}~{expires_at}~{since_seq}"
        return f"{payload}~{_mac(self._key, payload)}", session_id, expires_at

    async def authenticate(self, token: str | None, now: int | Callable[[], Awaitable[int]], *,
                           fresh: bool = False) -> Principal:
        """The Principal behind ``token``; raises Unauthenticated.

        ``now`` may be a clock to call: only H5 session tokens need the time (their expiry), so a
        terminal's request does not pay a Redis TIME round trip for nothing (bench/README.md, P1).
        ``fresh``: read the terminal's record from Redis, not the cache (the heartbeat's re-check).
        """
        if not token:
            raise Unauthenticated()
        if hmac.compare_digest(token.encode(), self._admin):
            return Principal(role="admin")
        parts = token.split("~")
        if parts[0] == "erp" and len(parts) == 4:
            return await self._terminal(*parts[1:], fresh=fresh)
        if parts[0] == "h5" and len(parts) == 7:
            if not isinstance(now, int):
                local = self.clock() if self.clock is not None else None
                now = local if local is not None else await now()
            return await self._followed(self._session(parts, now))
        raise Unauthenticated()

    async def _terminal(self, store_id: str, terminal_id: str, secret: str, *, fresh: bool = False) -> Principal:
        record = None if fresh else self.cache.get(store_id, terminal_id)
        if record is None:
            ticket = self.cache.begin()
            raw = await self.redis.hget(keys.terminals(store_id), terminal_id) if store_id else None
            if raw is None:
                hmac.compare_digest(hash_secret(secret), hash_secret(""))  # same work either way
                raise Unauthenticated()
            record = json.loads(raw)
            self.cache.put(store_id, terminal_id, record, ticket)
        if not hmac.compare_digest(hash_secret(secret), record["token_hash"]):
            raise Unauthenticated()
        return Principal(
            role="erp", store_id=store_id, terminal_id=terminal_id, name=record["name"],
            master=bool(record.get("master")), credential=record["token_hash"],
        )

    async def _followed(self, principal: Principal) -> Principal:
        """The session on the table its party was moved or merged to since it was issued (SPEC §11)."""
        issued_at = int(principal.expires_at or 0) - self.session_ttl_ms
        table_id = await followed_table(self.redis, str(principal.store_id), str(principal.table_id), issued_at)
        return principal if table_id == principal.table_id else replace(principal, table_id=table_id)

    def _session(self, parts: list[str], now: int) -> Principal:
        _, store_id, table_id, session_id, expires_at, since_seq, mac = parts
        payload = "~".join(parts[:6])
        if not hmac.compare_digest(mac, _mac(self._key, payload)):
            raise Unauthenticated()
        if not expires_at.isdigit() or int(expires_at) <= now or not since_seq.isdigit():
            raise Unauthenticated()
        return Principal(
            role="h5", store_id=store_id, table_id=table_id, session_id=session_id,
            expires_at=int(expires_at), since_seq=int(since_seq),
        )
