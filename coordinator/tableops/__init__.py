"""Table operations (SPEC §11): move and merge through the store's master ERP (``service.py``)."""

from coordinator.tableops.service import TableOperations

__all__ = ["TableOperations"]
