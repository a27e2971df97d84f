"""A stand-in restaurant ERP: order database, master and secondary terminals, waiter page."""
