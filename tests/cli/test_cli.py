from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    e["SWITCHBOARD_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    return e


def test_serve_refuses_an_unmigrated_database(env: dict[str, str]) -> None:
    r = run("serve", "--port", "1", env=env)
    assert r.returncode == 2
    assert "switchboard migrate" in r.stderr


def test_migrate_createuser_and_demo_are_idempotent(env: dict[str, str]) -> None:
    assert run("migrate", env=env).returncode == 0
    assert run("migrate", env=env).returncode == 0
    r = run(
        "createuser", "--workspace", "Acme", "--email", "boss@acme.test", "--password", "pw-123456", env=env
    )
    assert r.returncode == 0, r.stderr
    r = run(
        "createuser",
        "--workspace",
        "Acme",
        "--email",
        "x@acme.test",
        "--password",
        "p",
        "--role",
        "god",
        env=env,
    )
    assert r.returncode != 0
    first = run("demo", env=env)
    second = run("demo", env=env)
    assert first.returncode == second.returncode == 0, first.stderr
    assert "password: switchboard-demo" in first.stdout and "password: switchboard-demo" in second.stdout
    assert "Sign in at http://127.0.0.1:8000/login" in first.stdout
    env["SWITCHBOARD_PUBLIC_URL"] = "https://crm.example.test/"
    assert "Sign in at https://crm.example.test/login" in run("demo", env=env).stdout


def test_production_without_secret_is_a_startup_error(env: dict[str, str]) -> None:
    env["SWITCHBOARD_ENV"] = "production"
    r = run("migrate", env=env)
    assert r.returncode == 2
    assert "SWITCHBOARD_SECRET_KEY" in r.stderr
