"""Fan-out benchmark (issue 5): `python -m bench.fanout [--clients 1000] [--rates 10,50,...]
[--step-s 3] [--stacks ours,limit,broadcaster,socketio] [--idle 5000] [--longpolls 2000]`.

ours: event-log rows committed on PostgreSQL (one statement per event, as `emit` does) → relay →
our own redis-server → hub → 1,000 raw WebSocket clients. The same clients and rates against the
limit (bare `websockets`, frame built once, `transport.write` per client), Starlette + broadcaster
and python-socketio + AsyncRedisManager; then ours once more, alone, at half its peak (the p99
target's point); then memory per idle WebSocket and per waiting long-poll.
Runs vary a lot on a shared machine: compare stacks within one run."""
