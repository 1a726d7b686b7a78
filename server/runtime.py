"""Process-wide tuning for the long-running commands (`switchboard serve`, `switchboard worker`)."""

from __future__ import annotations

import gc

# Full collections after this many collections of the middle generation (CPython's default: 10).
# Young cycles are still collected as often as ever; garbage that reached the oldest generation
# waits minutes instead of seconds.
FULL_GC_EVERY = 1000


def settle_heap() -> None:
    """Call once the app is built, just before serving. Everything alive by then (modules, routes,
    models, pools: ~110k objects) lives as long as the process, yet every full collection of the
    cyclic GC walked it: 50-80 ms with the event loop stopped, every few seconds under fan-out
    load (`python -m bench.fanout`, p99). Frozen, a full collection walks only what came after
    (1,000 sockets: ~60k objects, 20-40 ms), and it comes a hundred times less often."""
    gc.collect()
    gc.freeze()
    young, middle, _old = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_EVERY)
