"""Switchboard's real-time layer (DESIGN §6).

    event log (server.events) ──relay──▶ backend (memory:// | redis://) ──▶ hub ──▶ sockets
      committed rows, ids contiguous       one channel per workspace        per process:
      per workspace, in commit order       `{prefix}ws:{id}`, batches       bounded, gap-free

* `relay.Relay` publishes committed rows in id order, at least once. Woken by PostgreSQL
  NOTIFY (or, on SQLite, by an `after_commit` hook / `Realtime.poke`), with a 1 s poll fallback.
  One relay publishes at a time (a Redis lease); its cursors live in Redis beside the lease.
* `hub.Hub` holds ONE pattern subscription per process for its whole life and fans each batch
  out to local subscribers; a frame is built once per event and written to every socket's
  transport (one write per socket per batch). Missing ids (Redis restart, relay hand-over) are
  read back from the event log before anything later is delivered.
* `websocket`, `http`: `GET /ws`, `GET /api/v1/events` (long-poll), `GET /api/v1/events/stream` (SSE).
  Subscribing is attach → replay (from the hub's ring or the log) → live, so the seam has no gap
  and no duplicate. A socket past its buffer (`ws_send_buffer` frames) is closed with 1008 and
  a reason; it resumes with `after`.
* `presence`: presence changes are persisted as `presence` events (topic `contact:{id}`); the
  live state is in Redis with an expiry (memory on the embedded default).
* `service.Realtime`: owns all of the above; `start()`/`stop()` in the app lifespan, `routes` to mount.

Long-poll answers `{"resync": true, "events": [], "last_id": head}` and the WebSocket
`{"type": "resync"}` (SSE: `event: resync`) when `after` is older than the retained log.
"""
