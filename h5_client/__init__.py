"""The diner's H5 page (static/) and a Python H5 client."""

from pathlib import Path

#: The page's files; the coordinator serves them at ``/h5/`` (index.html) and ``/h5/static/``.
STATIC_DIR = Path(__file__).parent / "static"
