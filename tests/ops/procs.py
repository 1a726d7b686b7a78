"""Starting real processes (switchboard, nginx, honcho) for the deployment tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_ENV="test",
        SWITCHBOARD_DATABASE_URL=database_url,
        SWITCHBOARD_SECRET_KEY="ops-test-secret-" + "x" * 32,
        SWITCHBOARD_RATE_LIMIT_ENABLED="false",
        SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS="true",  # local sinks and receivers
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def switchboard(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [str(BIN / "switchboard"), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"switchboard {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def wait_http(
    url: str, *, timeout_s: float = 20.0, proc: subprocess.Popen[bytes] | None = None, **kw: object
) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=1.0, **kw)  # type: ignore[arg-type]
            if r.status_code < 500:
                return
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout_s} s: {last!r}")


@contextmanager
def running(argv: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, stopped (TERM, then KILL) with its children afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
