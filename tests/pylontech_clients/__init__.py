"""Scripts that drive the PyPI Pylontech clients in a subprocess (see tests/test_rs485_clients.py)."""
