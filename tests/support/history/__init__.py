"""A randomized concurrent workload against real coordinator processes, its recorded history, and a
checker of every SPEC §3 and §13 invariant over that history.

    recorder.py         the History: every request/response, every websocket message, faults, clock
                        samples, provider trades, the final Redis orders and ERP books
    clients.py          recorded HTTP calls, websocket subscribers that resume with ``since``
    workload.py         the run: processes, actors, kill -9 and Redis restarts, the final reads
    erp_model.py        the ERP (system of record) answering the master terminal's RPCs, booking shares
    steps.py            ERP terminals' and diners' random lock, payment and table-operation steps
    shares_workload.py  split bill (SPEC §10): diners' shares through the provider, the cashier's rest
    provider.py         the sandbox provider process and the diners' provider payments
    checker.py          pure: History -> violations (I1–I5 here; the rest from the modules below)
    lives.py            the locks as the stream tells them; Violation
    delivery_check.py   I5 per subscriber, I6 what H5 sees, exact expiry
    moves.py            table operations (TO1–TO5)
    payments_check.py   I8, I9 provider money
    shares_check.py     I10 split bill

``tests/test_history.py`` runs a bounded variant; ``bench/history_long.py`` the long one.
"""
