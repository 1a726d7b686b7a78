"""Limits on FAILED sign-ins, per (account, client address) and per client address.

Only failures spend tokens, and only from the address they came from: a guessing run against an
account from one address (or a botnet's addresses, each with its own bucket) never locks the owner
out from theirs, and signing in successfully costs nothing. An address that has failed too often is
refused before the password is checked, so a limited guessing run costs no argon2 work."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from server.ratelimit import Check, Decision

if TYPE_CHECKING:
    from server.services import Services


def client_address(conn: HTTPConnection) -> str:
    """The socket peer; behind a trusted proxy uvicorn has already put X-Forwarded-For there."""
    return conn.client.host if conn.client else "unknown"


def _checks(services: Services, email: str, address: str) -> list[Check]:
    rl = services.ratelimits
    # Hashed: the address itself never sits in Redis.
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return [
        (f"login-ip:{address}", rl.buckets.login_ip),
        (f"login-account:{account}:{address}", rl.buckets.login_account),
    ]


async def refusal(services: Services, *, email: str, address: str) -> Decision | None:
    """Why this attempt must wait (a refusing decision), or None. Spends nothing."""
    rl = services.ratelimits
    if not rl.enabled:
        return None
    decision = await rl.limiter.hit(_checks(services, email, address), cost=0)
    if decision is None or decision.allowed:
        return None
    services.metrics.rate_limited.labels(bucket=decision.bucket).inc()
    return decision


async def spend_lookup(services: Services, *, address: str) -> Decision | None:
    """A single sign-on lookup by email domain ("Continue with SSO") spends a token of the
    address's failed-sign-in bucket: asking which domains have SSO is as limited as guessing
    passwords. A refusing decision, or None."""
    rl = services.ratelimits
    if not rl.enabled:
        return None
    decision = await rl.limiter.hit([(f"login-ip:{address}", rl.buckets.login_ip)])
    if decision is None or decision.allowed:
        return None
    services.metrics.rate_limited.labels(bucket=decision.bucket).inc()
    return decision


async def record_failure(services: Services, *, email: str, address: str) -> None:
    rl = services.ratelimits
    if rl.enabled:
        await rl.limiter.charge(_checks(services, email, address))


def wait_message(decision: Decision) -> str:
    return f"Too many sign-in attempts from this address; try again in {max(1, decision.retry_after_s)} s."
