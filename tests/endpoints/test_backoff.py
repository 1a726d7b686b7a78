from __future__ import annotations

import datetime as dt

from server.endpoints.deliverer import Deliverer, DelivererConfig, signature_header
from server.endpoints.service import Attempt
from server.signing import verify
from tests.endpoints.receiver import verify_signature

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _attempt(attempts: int) -> Attempt:
    return Attempt(
        delivery_id=1,
        endpoint_id=1,
        url="http://x.test/",
        secrets=("s",),
        payload={},
        attempts=attempts,
        created_at=T0,
    )


def test_default_schedule_backs_off_exponentially_and_ends_at_24_hours() -> None:
    d = Deliverer(db=None, config=DelivererConfig(jitter=0.0))  # type: ignore[arg-type]
    now, gaps = T0, []
    for n in range(10):
        nxt = d.next_attempt_at(_attempt(n), now)
        assert nxt is not None
        gaps.append((nxt - now).total_seconds())
        now = nxt
    assert gaps[:6] == [30, 90, 270, 810, 2430, 7290]
    assert max(gaps) == 6 * 3600  # capped
    # The 10 failures that disable an endpoint take about 21 h: inside the 24 h retry window.
    assert dt.timedelta(hours=20) < sum(gaps[:9], 0.0) * dt.timedelta(seconds=1) < dt.timedelta(hours=24)
    # The last retry lands on the window's end, and a failure there gives up.
    late = T0 + dt.timedelta(hours=23, minutes=59)
    assert d.next_attempt_at(_attempt(9), late) == T0 + dt.timedelta(hours=24)
    assert d.next_attempt_at(_attempt(10), T0 + dt.timedelta(hours=24)) is None


def test_jitter_stays_within_its_band() -> None:
    d = Deliverer(db=None, config=DelivererConfig(jitter=0.2))  # type: ignore[arg-type]
    delays = {(d.next_attempt_at(_attempt(2), T0) - T0).total_seconds() for _ in range(200)}  # type: ignore[operator]
    assert all(270 * 0.8 <= x <= 270 * 1.2 for x in delays)
    assert len(delays) > 100  # actually random


def test_signature_header_carries_one_v1_per_secret() -> None:
    body = b'{"id":1}'
    header = signature_header(("new", "old"), body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and header.count(",v1=") == 2
    for secret in ("new", "old"):
        assert verify([secret], header, body, now=1_700_000_000)
    assert not verify(["other"], header, body, now=1_700_000_000)
    assert verify_signature(signature_header(("new",), body), body, "new")
