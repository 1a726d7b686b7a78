"""Inbound provider webhooks: verify (`verify`), normalise (`parse`), apply (`service`), serve (`api`)."""
