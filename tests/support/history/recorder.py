"""The history of one workload run: what was asked, what came back, what every subscriber received.

Times are the workload's ``time.monotonic()`` in seconds; ``clock`` samples map them to the Redis
server clock (Unix ms), which is the clock of every ``acquired_at``, ``expires_at`` and event ``ts``.
Everything is plain data (JSON-serialisable), so a history can be saved, loaded and hand-made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Op:
    """One HTTP request and its outcome (``status`` None: no answer — refused connection, timeout)."""

    i: int
    actor: str
    role: str                 # "erp" | "h5" | "admin"
    proc: int                 # index of the coordinator process asked
    method: str
    path: str
    body: Any
    t0: float
    t1: float | None = None
    status: int | None = None
    resp: Any = None
    error: str | None = None


@dataclass
class Connection:
    """One websocket connection of a subscriber."""

    sub: str
    conn: int
    proc: int
    since: int | None
    t_open: float
    hello_seq: int | None = None
    snapshot: bool = False
    t_close: float | None = None
    close_code: int | None = None


@dataclass
class Received:
    """One event a subscriber received, when, and on which of its connections."""

    sub: str
    conn: int
    t: float
    event: dict[str, Any]


@dataclass
class Fault:
    """A fault the workload injected."""

    kind: str                 # "kill" | "redis_restart" | "master_drop"
    t0: float
    t1: float | None = None
    detail: str = ""


@dataclass
class History:
    """Everything the checker needs."""

    store_id: str = ""
    ops: list[Op] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    #: (monotonic s, Redis ms) pairs.
    clock: list[tuple[float, int]] = field(default_factory=list)
    #: The store's event stream at the end (XRANGE), oldest first: the record of what happened.
    stream: list[dict[str, Any]] = field(default_factory=list)
    #: Live locks at the end (staff view, no tokens) and the Redis time they were read at.
    final_locks: list[dict[str, Any]] = field(default_factory=list)
    final_now: int = 0
    #: The store seq the final board agrees with (no event between reading seq, board, seq again).
    final_seq: int = 0
    #: subscriber -> the store seq it was shown to have caught up to before it was closed.
    until: dict[str, int] = field(default_factory=dict)
    #: Secrets an H5 answer must never show: terminal id -> token, H5 actor -> session id / token.
    terminals: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Subscribers that are H5 sessions (actor name -> session actor), for the leak check.
    h5_subscribers: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    #: Provider trades the workload started (SPEC §9), each with ``final``: the sandbox's trade at the end.
    trades: list[dict[str, Any]] = field(default_factory=list)
    #: The store's payment records at the end (admin ``GET .../payments``).
    payments: list[dict[str, Any]] = field(default_factory=list)
    #: Split bill (SPEC §10), read from Redis at the end: order_id -> {status, version, table_id, total_cents,
    #: paid_cents, shares (the paid shares), refs (payment_ref -> the fence of the share it paid)}.
    final_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The ERP's own books at the end: order_id -> {status, shares: {payment_ref: amount_cents},
    #: uncertain: a share payment whose outcome the ERP never learnt}.
    erp_books: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, path: Path | str) -> None:
        """Write the history as JSON."""
        Path(path).write_text(json.dumps(asdict(self), ensure_ascii=False))

    @classmethod
    def load(cls, path: Path | str) -> History:
        """Read a history written by ``save``."""
        raw = json.loads(Path(path).read_text())
        return cls(
            **{k: v for k, v in raw.items() if k not in ("ops", "connections", "received", "faults", "clock")},
            ops=[Op(**o) for o in raw["ops"]],
            connections=[Connection(**c) for c in raw["connections"]],
            received=[Received(**r) for r in raw["received"]],
            faults=[Fault(**f) for f in raw["faults"]],
            clock=[tuple(c) for c in raw["clock"]],
        )

    def redis_ms(self, t: float) -> float:
        """The Redis clock at monotonic ``t``, from the clock sample nearest before it."""
        if not self.clock:
            raise ValueError("no clock samples")
        best = self.clock[0]
        for sample in self.clock:
            if sample[0] <= t:
                best = sample
        return best[1] + (t - best[0]) * 1000
