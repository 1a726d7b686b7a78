"""Connections per process (issue 19): `python -m bench.connections [--counts 10000,25000,50000]
[--stacks ours,limit] [--sources 8]`.

ours: one `switchboard serve --no-worker` (PostgreSQL database and redis-server of the bench's
own, file limit set with `prlimit`) holding N idle authenticated WebSockets subscribed to `board`;
limit: bench.fanout's bare `websockets` server at the same N. For each: server memory per socket
(RSS delta over N, after a warm-up of 100), time to open and subscribe them all, and one `board`
event — committed to the event log for ours, written by the server itself for the limit — to
every socket: p50/p99/max from commit to the socket. Prints one table."""
