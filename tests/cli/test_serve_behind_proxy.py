"""`switchboard serve` behind a reverse proxy (issue 14 item 15): with no SWITCHBOARD_PUBLIC_URL, the
URL Twilio signed and the `webhook_url` shown are the URL as requested, with the scheme a trusted
proxy forwarded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import ROOT, run

TOKEN = "twilio-auth-token-" + "t" * 14
PROXIED = {"Host": "crm.example.test", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def twilio_signature(url: str, form: dict[str, str]) -> str:
    payload = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(TOKEN.encode(), payload.encode(), hashlib.sha1).digest()).decode()


@contextmanager
def serving(env: dict[str, str], *extra: str) -> Iterator[str]:
    """`switchboard serve` on a free port; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--no-worker", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def served_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.pop("FORWARDED_ALLOW_IPS", None)
    env["SWITCHBOARD_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}"
    env["SWITCHBOARD_RATE_LIMIT_ENABLED"] = "false"
    assert run("migrate", env=env).returncode == 0
    r = run(
        "createuser", "--workspace", "Acme", "--email", "boss@acme.test", "--password", "pw-123456", env=env
    )
    assert r.returncode == 0, r.stderr
    return env


def _twilio_provider(base: str, *, scheme: str = "https") -> int:
    login = httpx.post(base + "/api/v1/auth/login", json={"email": "boss@acme.test", "password": "pw-123456"})
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    config = {"account_sid": "AC" + "0" * 32, "auth_token": TOKEN, "from_number": "+15017122661"}
    body = {"name": "tw", "kind": "twilio", "channel": "sms", "priority": 1, "config": config}
    r = httpx.post(base + "/api/v1/providers", json=body, headers={**auth, **PROXIED})
    assert r.status_code == 201, r.text
    assert r.json()["webhook_url"] == f"{scheme}://crm.example.test/webhooks/{r.json()['id']}"
    return int(r.json()["id"])


FORM = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered", "To": "+15558675310"}


def test_a_twilio_callback_signed_for_the_forwarded_https_url_verifies(served_env: dict[str, str]) -> None:
    with serving(served_env) as base:
        provider_id = _twilio_provider(base)
        url = f"https://crm.example.test/webhooks/{provider_id}"
        headers = {**PROXIED, "X-Twilio-Signature": twilio_signature(url, FORM)}
        r = httpx.post(f"{base}/webhooks/{provider_id}", data=FORM, headers=headers)
        assert r.status_code == 200, r.text


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(served_env: dict[str, str]) -> None:
    with serving(served_env, "--forwarded-allow-ips", "192.0.2.1") as base:
        provider_id = _twilio_provider(base, scheme="http")  # X-Forwarded-Proto not believed
        url = f"https://crm.example.test/webhooks/{provider_id}"
        headers = {**PROXIED, "X-Twilio-Signature": twilio_signature(url, FORM)}
        r = httpx.post(f"{base}/webhooks/{provider_id}", data=FORM, headers=headers)
        assert r.status_code == 401
