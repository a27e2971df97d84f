"""Shared pytest configuration: the fixtures of ``tests/support/`` registered as plugins.

Test modules take fixtures by name from these plugins and import plain helpers from
``tests.support.*``; no test module imports another (``tests/test_architecture.py`` checks it).
"""

pytest_plugins = [
    "tests.support.redis_servers",   # real redis-server: one node, a 3-master cluster, private ones
    "tests.support.app",             # the coordinator app in-process, a seeded shop
    "tests.support.processes",       # `tablelock serve` child processes
    "tests.support.browser",         # headless Chromium
    "tests.support.restaurant",      # coordinator on a real port + the ERP simulator's terminals
    "tests.support.erp_master",      # the ERP simulator's master terminal on a shop's socket
    "tests.support.erp_store",       # a store for the ERP simulator and its seeded ERP with waiter pages
    "tests.support.sandbox",         # the sandbox payment provider process, a notify receiver
    "tests.support.payments",        # a restaurant taking provider payments through the sandbox
    "tests.support.sentinel",        # a primary, a replica and three sentinels
    "tests.support.cluster_replicas",  # a Redis Cluster of 3 masters + 3 replicas
]
