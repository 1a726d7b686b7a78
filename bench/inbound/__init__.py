"""Inbound messages benchmark (issue 16): `python -m bench.inbound`."""
