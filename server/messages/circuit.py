"""Per-provider circuit breaker, so a provider that is down is not hammered.

closed ── `failures` consecutive transient failures ──▶ open ── `reset_s` later ──▶ half-open
half-open lets one probe through: success closes the circuit, failure opens it again.
A provider's own "slow down" (429 with Retry-After) pauses it without counting as a failure.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    def __init__(self, *, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, failures)
        self.reset_s = reset_s
        self.clock = clock
        self.state = CircuitState.closed
        self.failures = 0
        self.opened_at = 0.0
        self.paused_until = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether a send may go to this provider now. In half-open, the caller that gets True holds
        the one probe and must report `success`, `failure` or `abandon`."""
        now = self.clock()
        if now < self.paused_until:
            return False
        if self.state is CircuitState.open:
            if now - self.opened_at < self.reset_s:
                return False
            self.state = CircuitState.half_open
            self._probing = False
        if self.state is CircuitState.half_open:
            if self._probing:
                return False
            self._probing = True
        return True

    def retry_in(self) -> float:
        """Seconds until `allow` may say yes again (0 when it may now)."""
        now = self.clock()
        wait = max(0.0, self.paused_until - now)
        if self.state is CircuitState.open:
            wait = max(wait, self.opened_at + self.reset_s - now)
        return wait

    def success(self) -> None:
        self.state = CircuitState.closed
        self.failures = 0
        self._probing = False

    def failure(self) -> None:
        self._probing = False
        self.failures += 1
        if self.state is CircuitState.half_open or self.failures >= self.threshold:
            self.state = CircuitState.open
            self.opened_at = self.clock()

    def abandon(self) -> None:
        """The caller took the probe but did not send after all."""
        self._probing = False

    def pause(self, seconds: float) -> None:
        """The provider asked us to wait (Retry-After): skip it until then."""
        self._probing = False
        self.paused_until = max(self.paused_until, self.clock() + seconds)


class Circuits:
    """One breaker per provider, created on first use."""

    def __init__(self, *, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._make = lambda: CircuitBreaker(failures=failures, reset_s=reset_s, clock=clock)
        self._breakers: dict[int, CircuitBreaker] = {}

    def __getitem__(self, provider_id: int) -> CircuitBreaker:
        breaker = self._breakers.get(provider_id)
        if breaker is None:
            breaker = self._breakers[provider_id] = self._make()
        return breaker

    def states(self) -> dict[int, str]:
        return {pid: b.state.value for pid, b in self._breakers.items()}
