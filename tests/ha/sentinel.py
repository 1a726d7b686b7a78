"""A Redis primary, one replica and three sentinels of our own on free 127.0.0.1 ports.

Debian's `redis-server` and `redis-sentinel` (`.ci/run` installs both). Sentinel's timeouts are
tuned down from their defaults (30 s to notice, 3 min failover timeout) so a failover takes a few
seconds; every process is stopped by its pid in `close()`, whatever happened before."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

SERVICE = "sbmaster"
DOWN_AFTER_MS = 1000  # a primary silent this long is subjectively down (default 30000)
FAILOVER_TIMEOUT_MS = 3000  # default 180000
QUORUM = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(name: str) -> str:
    exe = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if exe is None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{name} is required (apt-get install redis-server redis-sentinel)")
        pytest.skip(f"{name} is not installed")
    return exe


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s} s")


class SentinelCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sb-sentinel-"))
        self.server = _exe("redis-server")
        self.sentinel = _exe("redis-sentinel")
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()
        self.procs[name] = proc
        return proc

    def _redis(self, name: str, port: int, *extra: str) -> None:
        data = self.dir / name
        data.mkdir()
        argv = [self.server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = self._spawn(name, [*argv, "--dir", str(data), *extra])
        _wait_port(port, proc)

    def start(self) -> None:
        self._redis("primary", self.primary_port)
        self._redis("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel{i}.conf"  # Sentinel rewrites its own file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            _wait_port(port, self._spawn(f"sentinel{i}", [self.sentinel, str(conf)]))
        self.wait_settled()

    def wait_settled(self, timeout_s: float = 20.0) -> None:
        """Until every sentinel knows the replica and the two other sentinels (else no quorum)."""
        import redis

        deadline = time.monotonic() + timeout_s
        state: object = None
        while time.monotonic() < deadline:
            ok = True
            for port in self.sentinel_ports:
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as s:
                    try:
                        m = s.sentinel_master(SERVICE)
                    except redis.RedisError as exc:
                        state, ok = exc, False
                        break
                    state = m
                    if int(m["num-other-sentinels"]) < 2 or int(m["num-slaves"]) < 1:
                        ok = False
                        break
            if ok:
                with redis.Redis(port=self.primary_port, socket_timeout=1) as p:
                    if p.info("replication")["connected_slaves"] >= 1:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"sentinels did not settle: {state!r}")

    def primary(self) -> tuple[str, int]:
        import redis

        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=1) as s:
                    host, p = s.sentinel_get_master_addr_by_name(SERVICE)
                    return (host.decode() if isinstance(host, bytes) else str(host)), int(p)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> None:
        """SIGKILL whichever server the sentinels name as primary now."""
        _, port = self.primary()
        name = "primary" if port == self.primary_port else "replica"
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(5)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if not os.environ.get("SB_HA_KEEP"):  # keep the processes' logs to read after a failure
            shutil.rmtree(self.dir, ignore_errors=True)
