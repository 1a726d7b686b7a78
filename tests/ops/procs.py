"""Starting real processes (switchboard, nginx, honcho) for the deployment tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


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


@dataclass(frozen=True)
class Nginx:
    base: str  # https://127.0.0.1:<port>
    http_port: int  # the plain port that redirects
    tls: ssl.SSLContext  # trusts the self-signed certificate
    proc: subprocess.Popen[bytes]


@contextmanager
def running_nginx(run_dir: Path, web_ports: list[int], static_dir: Path) -> Iterator[Nginx]:
    """deploy/nginx.conf, rendered by deploy/render-nginx.sh with a self-signed certificate, in
    front of the two instances listening on `web_ports`; its files live in `run_dir`, which the
    caller makes readable by nginx's workers (mode 0755, not under pytest's 0700 tmp)."""
    assert NGINX is not None, "nginx is not installed"
    subprocess.run([str(ROOT / "deploy/selfsigned-cert.sh"), str(run_dir / "tls")], check=True, timeout=30)
    https_port, http_port = free_port(), free_port()
    conf = subprocess.run(
        [str(ROOT / "deploy/render-nginx.sh")],
        env={
            **os.environ,
            "RUN_DIR": str(run_dir),
            "HTTPS_PORT": str(https_port),
            "HTTP_PORT": str(http_port),
            "WEB_1": f"127.0.0.1:{web_ports[0]}",
            "WEB_2": f"127.0.0.1:{web_ports[1]}",
            "CERT": str(run_dir / "tls/cert.pem"),
            "KEY": str(run_dir / "tls/key.pem"),
            "STATIC_DIR": str(static_dir),
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (run_dir / "nginx.conf").write_text(conf)
    argv = [NGINX, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", str(run_dir / "error.log")]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stderr
    with running([*argv, "-g", "daemon off;"], env=dict(os.environ), log=run_dir / "nginx.out") as proc:
        tls = ssl.create_default_context(cafile=str(run_dir / "tls/cert.pem"))
        base = f"https://127.0.0.1:{https_port}"
        wait_http(f"{base}/healthz", proc=proc, verify=tls)
        yield Nginx(base, http_port, tls, proc)
