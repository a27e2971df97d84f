"""Prometheus metrics of the coordinator (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

LOCK_OPS = Counter(
    "tablelock_lock_ops_total", "Lock operations by kind, operation and result",
    ["kind", "op", "result"], registry=REGISTRY,
)
CONFLICTS = Counter(
    "tablelock_lock_conflicts_total", "Lock requests denied, by code", ["code"], registry=REGISTRY,
)
FORCED = Counter(
    "tablelock_forced_unlocks_total", "Locks broken by a forced request, by broken kind", ["kind"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "tablelock_request_seconds", "HTTP request latency", ["method", "route", "status"],
    registry=REGISTRY, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REPLICA_WAIT_SHORT = Counter(
    "tablelock_replica_wait_short_total",
    "Grants and completions returned before TABLELOCK_REDIS_WAIT_REPLICAS replicas acknowledged them",
    registry=REGISTRY,
)
