"""The peer: the same jobs through `arq` (Redis), one worker process, `max_jobs` like our concurrency.

`python -m bench.dispatch.arq_peer --jobs N [--sink URL]` enqueues N jobs, then runs one burst worker
until the queue is empty, and prints JSON `{"jobs", "elapsed_s"}`. With `--sink` each job POSTs to the
sink like our sandbox adapter does (same HTTP client, Idempotency-Key); without it the job does nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import orjson
from arq import Worker, create_pool
from arq.connections import RedisSettings

from server.messages.provider_pool import make_http_client

QUEUE = "switchboard-bench:arq"


async def noop(_ctx: dict[str, Any], _i: int) -> None:
    return None


async def post(ctx: dict[str, Any], i: int) -> None:
    body = orjson.dumps({"message_id": i, "to": f"user{i}@example.test", "subject": "Hi", "body": "Hello"})
    r = await ctx["http"].post(
        ctx["sink"], content=body, headers={"Content-Type": "application/json", "Idempotency-Key": f"arq-{i}"}
    )
    r.raise_for_status()


async def run(jobs: int, sink: str | None, redis_url: str, max_jobs: int) -> dict[str, Any]:
    settings = RedisSettings.from_dsn(redis_url)
    pool = await create_pool(settings, default_queue_name=QUEUE)
    fn = "post" if sink else "noop"
    try:
        await pool.delete(QUEUE)
        for start in range(0, jobs, 500):
            await asyncio.gather(*(pool.enqueue_job(fn, i) for i in range(start, min(jobs, start + 500))))
        http = make_http_client(max_jobs, allow_private=True)  # our dispatcher's client, to a local sink

        async def startup(ctx: dict[str, Any]) -> None:
            ctx["http"], ctx["sink"] = http, sink

        worker = Worker(
            functions=[noop, post],  # type: ignore[list-item]
            redis_pool=pool,
            queue_name=QUEUE,
            burst=True,
            max_jobs=max_jobs,
            handle_signals=False,
            on_startup=startup,
            poll_delay=0.05,
        )
        began = time.perf_counter()
        await worker.async_run()
        elapsed = time.perf_counter() - began
        await worker.close()
        await http.aclose()
        done = worker.jobs_complete
        # arq keeps each result for an hour: remove ours
        keys = [k async for k in pool.scan_iter(match="arq:result:*")]
        for i in range(0, len(keys), 1000):
            await pool.delete(*keys[i : i + 1000])
        return {"jobs": done, "failed": worker.jobs_failed, "elapsed_s": elapsed}
    finally:
        await pool.aclose()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--sink")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    p.add_argument("--max-jobs", type=int, default=64)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.jobs, a.sink, a.redis, a.max_jobs))))


if __name__ == "__main__":
    main()
