"""One fresh database and one real `switchboard serve --no-worker` on it, for bench/scale's measures."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.webhooks.__main__ import HOST, PG_ADMIN, _admin, _free_port, stop, wait_listening

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Served:
    port: int
    pid: int
    db_url: str
    env: dict[str, str]


@contextmanager
def served(
    prefix: str,
    *,
    workspace: str,
    email: str,
    password: str,
    pin: bool,
    env: dict[str, str] | None = None,
    before_start: Callable[[str], object] | None = None,
) -> Iterator[Served]:
    """A database `prefix_<random>` migrated to head with an admin of `workspace`, `before_start`
    given its URL (to fill it), then the server (on core 0 when `pin`); both gone afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    db_url = f"postgresql+asyncpg://{PG_ADMIN['user']}@{PG_ADMIN['host']}:{PG_ADMIN['port']}/{name}"
    full = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": db_url,
        "SWITCHBOARD_ENV": "development",
        "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32),
        "SWITCHBOARD_RATE_LIMIT_ENABLED": "false",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    full.pop("SWITCHBOARD_PUBLIC_URL", None)
    cli = [sys.executable, "-m", "server.cli"]
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([*cli, "migrate"], env=full, cwd=ROOT, check=True, capture_output=True)
        subprocess.run(
            [*cli, "createuser", "--workspace", workspace, "--email", email, "--password", password],
            env=full, cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        if before_start is not None:
            before_start(db_url)
        port = _free_port()
        cmd = [*cli, "serve", "--host", HOST, "--port", str(port), "--no-worker"]
        if pin and shutil.which("taskset"):
            cmd = ["taskset", "-c", "0", *cmd]
        proc = subprocess.Popen(cmd, env=full, cwd=ROOT, stdout=subprocess.DEVNULL)
        wait_listening(port, proc)
        yield Served(port, proc.pid, db_url, full)
    finally:
        if proc is not None:
            stop(proc)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@asynccontextmanager
async def signed_in(port: int, email: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the server on `port`, signed in through `POST /api/v1/auth/login` (bearer
    token); a request may take up to 10 minutes (an export, an import's upload)."""
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=600) as client:
        r = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
        if r.status_code != 200:
            raise SystemExit(f"sign-in failed: {r.status_code} {r.text[:200]}")
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client
