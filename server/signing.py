"""Our own webhook signature: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

Used for outgoing webhooks (`Switchboard-Signature`) and for the sandbox provider's delivery
webhooks (`X-Sandbox-Signature`)."""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_S = 300


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secrets: list[str], header: str | None, body: bytes, *, now: float | None = None) -> bool:
    """True when any `v1` in the header matches any secret, within the timestamp tolerance."""
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        parts.setdefault(k, []).append(v)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > TOLERANCE_S:
        return False
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        for candidate in parts.get("v1", []):
            # Compare every pair so the time taken does not reveal which one matched.
            ok |= hmac.compare_digest(expected, candidate)
    return ok
