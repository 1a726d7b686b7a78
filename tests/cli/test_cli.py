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


def test_shared_services_refuse_the_development_secret(env: dict[str, str]) -> None:
    env["SWITCHBOARD_DATABASE_URL"] = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    r = run("migrate", env=env)
    assert r.returncode == 2
    assert "SWITCHBOARD_SECRET_KEY must be set" in r.stderr
    assert "development secret is public" in r.stderr


def test_serving_beyond_loopback_refuses_the_development_secret(env: dict[str, str]) -> None:
    r = run("serve", "--host", "0.0.0.0", "--port", "1", env=env)
    assert r.returncode == 2
    assert "SWITCHBOARD_SECRET_KEY" in r.stderr and "0.0.0.0" in r.stderr


def test_settings_refuse_the_development_secret_unless_embedded() -> None:
    from server.settings import Settings

    pg = "postgresql+asyncpg://db.internal/switchboard"
    for shared in ({"database_url": pg}, {"redis_url": "redis://cache.internal:6379/0"}):
        with pytest.raises(ValueError, match="SWITCHBOARD_SECRET_KEY must be set"):
            Settings(env="development", **shared)
        assert Settings(env="development", secret_key="s" * 32, **shared).secret_key == "s" * 32
        assert not Settings(env="test", **shared).uses_development_secret  # a random one per process
    assert Settings(env="development").uses_development_secret  # the embedded default: `make run`


def test_production_forces_secure_cookies() -> None:
    from server.settings import Settings

    assert Settings(env="production", secret_key="s" * 32, cookie_secure=False).cookie_secure is True
    assert Settings(env="development", cookie_secure=False).cookie_secure is False
