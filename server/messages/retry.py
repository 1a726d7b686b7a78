"""When to try a message again after a transient failure."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# A provider's Retry-After of 0 (or a clock a little ahead of ours) must not turn into a hot loop.
MIN_RETRY_S = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float
    max_attempts: int
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def exhausted(self, attempts: int) -> bool:
        """Whether a message that has made `attempts` attempts may not make another."""
        return attempts >= self.max_attempts

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with "equal jitter": a delay in [d/2, d] with d = base·2^(attempts-1),
        capped at `max_s`. The random half spreads out messages that failed together, so a provider
        coming back is not hit by all of them in the same instant."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** max(0, attempts - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """The provider's `Retry-After` when it gave one (capped at `max_s`), else the backoff."""
        if retry_after is not None:
            return min(self.max_s, max(MIN_RETRY_S, retry_after))
        return max(MIN_RETRY_S, self.backoff(attempts))
