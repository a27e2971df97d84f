"""A stand-in restaurant ERP: order database, master and secondary terminals, waiter page.

    db.py         the ERP's own order database (sqlite): versions, fences, auto-accept, payments
    errors.py     the ERP's refusals and their wire codes
    view.py       pure: a terminal's view of its store built from websocket messages
    client.py     a terminal's HTTP calls to the coordinator
    terminal.py   one terminal: websocket client, held locks, the waiter's actions
    rpc.py        the master's answers to the coordinator's RPCs
    simulator.py  one store's ERP: database + terminals + their pages
    pages.py      the waiter page's local JSON API and event stream (static/ holds the page)
    page_guard.py who may use a waiter page: login link → session cookie, JSON-only, same-origin, Host
    scenario.py   scripted mode (TOML scenarios)
    seed.py       the demo restaurant's tables and menu
    cli.py        ``tablelock erp``;  demo.py: ``tablelock demo``
"""
