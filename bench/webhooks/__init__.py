"""Benchmark of inbound provider webhooks (issue 4): `python -m bench.webhooks`."""
