"""What the tests share: pytest plugins with fixtures (listed in ``tests/conftest.py``) and plain helpers."""
