"""A randomized concurrent workload against real coordinator processes, its recorded history, and a
checker of every SPEC §3 invariant over that history.

    recorder.py   the History: every request/response, every websocket message, faults, clock samples
    clients.py    recorded HTTP calls, websocket subscribers that resume with ``since``, a fake ERP master
    workload.py   ERP terminals and H5 sessions doing random lock work; kill -9 and Redis restarts
    checker.py    pure: History -> violations, one function per invariant

``tests/test_history.py`` runs a bounded variant; ``bench/history_long.py`` the long one.
"""
