"""Payments: provider adapters (``providers``) and the local sandbox provider (``sandbox``)."""
