from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx
import pytest

from server import signing
from server.providers.adapters import ConfigError, PermanentError, TransientError
from server.providers.adapters import sandbox as sandbox_module
from server.providers.adapters.sandbox import SandboxAdapter
from tests.providers.fakes import Recorder
from tests.providers.support import WEBHOOK_KEY, message


def sandbox(http: httpx.AsyncClient, origin: str, **config: Any) -> SandboxAdapter:
    return SandboxAdapter(
        config, http=http, provider_id=7, webhook_url=f"{origin}/webhooks/7", webhook_key=WEBHOOK_KEY
    )


async def until_idle(adapter: SandboxAdapter) -> None:
    async with asyncio.timeout(3):
        while True:
            if not adapter.pending_webhooks:
                return
            await asyncio.sleep(0.01)


async def test_delivery_webhook_arrives_signed(
    recorder: tuple[Recorder, str], http: httpx.AsyncClient
) -> None:
    rec, origin = recorder
    adapter = sandbox(http, origin, delivery_delay_ms=0)
    result = await adapter.send(message("sandbox"))
    assert result.provider_message_id.startswith("sbx-")
    uuid.UUID(result.provider_message_id.removeprefix("sbx-"))

    (hook,) = await rec.wait_for(1, path="/webhooks/7")
    assert hook.headers["content-type"] == "application/json"
    assert signing.verify([WEBHOOK_KEY], hook.headers["x-sandbox-signature"], hook.body)
    assert not signing.verify(["another-key"], hook.headers["x-sandbox-signature"], hook.body)
    events = hook.json["events"]
    assert [e["status"] for e in events] == ["sent", "delivered"]
    assert {e["message_id"] for e in events} == {result.provider_message_id}
    assert {e["recipient"] for e in events} == {"ada@example.test"}
    assert [e["reason"] for e in events] == [None, None]
    assert len({e["id"] for e in events}) == 2
    assert all(abs(e["timestamp"] - time.time()) < 5 and isinstance(e["timestamp"], int) for e in events)
    await adapter.aclose()


async def test_bounce_rate_one_bounces_with_a_reason(
    recorder: tuple[Recorder, str], http: httpx.AsyncClient
) -> None:
    rec, origin = recorder
    adapter = sandbox(http, origin, delivery_delay_ms=0, bounce_rate=1)
    await adapter.send(message("sandbox", channel="sms", to="+15551234567"))
    (hook,) = await rec.wait_for(1, path="/webhooks/7")
    sent, final = hook.json["events"]
    assert (sent["status"], final["status"]) == ("sent", "bounced")
    assert final["reason"] == "30005 Unknown destination handset"
    await adapter.aclose()


async def test_sink_gets_the_message_with_its_idempotency_key(
    recorder: tuple[Recorder, str], http: httpx.AsyncClient
) -> None:
    rec, origin = recorder
    adapter = sandbox(http, origin, delivery_delay_ms=-1, sink_url=f"{origin}/sink?run=1")
    await adapter.send(message("sandbox"))

    (sunk,) = await rec.wait_for(1, path="/sink")
    assert sunk.headers["idempotency-key"] == "sb-3-42"
    assert sunk.json == {
        "message_id": 42,
        "workspace_id": 3,
        "channel": "email",
        "to": "ada@example.test",
        "subject": "Your order shipped",
        "body": "Hello Ada, your order #1001 is on its way.",
        "idempotency_key": "sb-3-42",
        "from_name": "",
        "template": None,
    }
    # A negative delay turns the webhooks off.
    assert adapter.pending_webhooks == 0
    await asyncio.sleep(0.05)
    assert [r.path for r in rec.requests] == ["/sink"]


@pytest.mark.parametrize(
    ("status", "error"), [(500, TransientError), (429, TransientError), (400, PermanentError)]
)
async def test_a_failing_sink_fails_the_send(
    status: int, error: type[Exception], recorder: tuple[Recorder, str], http: httpx.AsyncClient
) -> None:
    rec, origin = recorder
    rec.status = status
    adapter = sandbox(http, origin, delivery_delay_ms=0, sink_url=f"{origin}/sink")
    with pytest.raises(error, match="sink is down"):
        await adapter.send(message("sandbox"))
    assert adapter.pending_webhooks == 0


async def test_aclose_cancels_pending_webhooks(
    recorder: tuple[Recorder, str], http: httpx.AsyncClient
) -> None:
    rec, origin = recorder
    adapter = sandbox(http, origin, delivery_delay_ms=60_000)
    await adapter.send(message("sandbox"))
    assert adapter.pending_webhooks == 1
    await adapter.aclose()
    assert adapter.pending_webhooks == 0
    assert rec.requests == []


async def test_a_refused_webhook_is_retried_then_logged(
    recorder: tuple[Recorder, str],
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec, origin = recorder
    rec.status = 503
    monkeypatch.setattr(sandbox_module, "WEBHOOK_BACKOFF_S", 0.01)
    adapter = sandbox(http, origin, delivery_delay_ms=0)
    with caplog.at_level(logging.WARNING, logger="server.providers.adapters.sandbox"):
        result = await adapter.send(message("sandbox"))
        await until_idle(adapter)
    assert len(rec.requests) == sandbox_module.WEBHOOK_ATTEMPTS
    failure = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failure) == 1
    assert failure[0].exc_info is not None
    assert result.provider_message_id in str(failure[0].exc_info[1])


def test_config_defaults_and_ranges() -> None:
    assert SandboxAdapter.validate_config({}) == {"delivery_delay_ms": 1500, "bounce_rate": 0.0}
    with pytest.raises(ConfigError) as invalid:
        SandboxAdapter.validate_config(
            {"bounce_rate": 1.5, "delivery_delay_ms": "soon", "sink_url": "nowhere"}
        )
    assert sorted(e["field"] for e in invalid.value.errors) == [
        "config.bounce_rate",
        "config.delivery_delay_ms",
        "config.sink_url",
    ]


async def test_delivery_events_of_many_sends_go_out_in_batches_each_once(
    recorder: tuple[Recorder, str], http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, origin = recorder
    monkeypatch.setattr(sandbox_module, "WEBHOOK_BATCH", 40)
    adapter = sandbox(http, origin, delivery_delay_ms=100)
    ids = [(await adapter.send(message("sandbox"))).provider_message_id for _ in range(100)]
    assert adapter.pending_webhooks == 100
    await until_idle(adapter)
    hooks = [r for r in rec.requests if r.path == "/webhooks/7"]
    assert 3 <= len(hooks) < 100  # batches of at most 40 messages, not a POST per message
    for hook in hooks:
        assert signing.verify([WEBHOOK_KEY], hook.headers["x-sandbox-signature"], hook.body)
        assert len(hook.json["events"]) <= 80
    events = [e for hook in hooks for e in hook.json["events"]]
    assert sorted((e["message_id"], e["status"]) for e in events) == sorted(
        (i, status) for i in ids for status in ("sent", "delivered")
    )
    await adapter.aclose()
