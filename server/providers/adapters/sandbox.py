"""The sandbox provider: accepts every send, then posts realistic signed delivery webhooks back.

Config: `delivery_delay_ms` (default 1500; negative turns webhooks off, as benchmarks do),
`bounce_rate` (0..1), `sink_url` (optional: each send is first POSTed there as JSON with an
`Idempotency-Key` header, which is how benchmarks and fault tests count duplicates).

Webhook body: `{"events": [{"id", "message_id", "status", "timestamp", "recipient", "reason"}]}`
with a "sent" event, then "delivered" or "bounced", signed `X-Sandbox-Signature` with
`server.signing.sign(webhook_key, raw_body)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import orjson

from server import signing
from server.providers.adapters import http
from server.providers.adapters.base import Adapter, OutgoingMessage, SendResult
from server.providers.adapters.fields import Fields

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF_S = 0.5  # doubled after each failed attempt: the app may be restarting
BOUNCE_REASONS = {
    "email": "550 5.1.1 The email account that you tried to reach does not exist",
    "sms": "30005 Unknown destination handset",
    "whatsapp": "131026 Message undeliverable",
    "chat": "channel_not_found",
}


class SandboxAdapter(Adapter):
    kind: ClassVar[str] = "sandbox"
    channels: ClassVar[frozenset[str]] = frozenset({"email", "sms", "whatsapp", "chat"})
    required_keys: ClassVar[frozenset[str]] = frozenset()
    secret_keys: ClassVar[frozenset[str]] = frozenset()
    endpoint_keys: ClassVar[frozenset[str]] = frozenset({"sink_url"})
    location_keys: ClassVar[frozenset[str]] = frozenset({"sink_url"})

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: httpx.AsyncClient,
        provider_id: int,
        webhook_url: str,
        webhook_key: str,
        allow_private: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            config,
            http=http,
            provider_id=provider_id,
            webhook_url=webhook_url,
            webhook_key=webhook_key,
            allow_private=allow_private,
        )
        self._random = rng or random.Random()
        self._webhooks: set[asyncio.Task[None]] = set()

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.integer("delivery_delay_ms", default=1500, maximum=3_600_000)
        fields.number("bounce_rate", default=0.0, minimum=0.0, maximum=1.0)
        fields.url("sink_url")

    async def send(self, msg: OutgoingMessage) -> SendResult:
        if sink_url := self.config.get("sink_url"):
            await http.post(
                self.http,
                sink_url,
                # Conversation fields only when set: sinks written before them see the same body.
                content=orjson.dumps(
                    {
                        k: v
                        for k, v in dataclasses.asdict(msg).items()
                        if v or k not in ("from_address", "reply_token")
                    }
                ),
                headers={"Content-Type": "application/json", "Idempotency-Key": msg.idempotency_key},
                parse_error=parse_error,
            )
        provider_message_id = f"sbx-{uuid.uuid4()}"
        if self.config["delivery_delay_ms"] >= 0 and self.webhook_url:
            task = asyncio.create_task(
                self._post_webhook(provider_message_id, msg), name=f"sandbox-webhook-{provider_message_id}"
            )
            self._webhooks.add(task)
            task.add_done_callback(self._webhook_done)
        return SendResult(provider_message_id)

    @property
    def pending_webhooks(self) -> int:
        return len(self._webhooks)

    async def aclose(self) -> None:
        tasks = list(self._webhooks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _webhook_done(self, task: asyncio.Task[None]) -> None:
        self._webhooks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sandbox webhook %s failed", task.get_name(), exc_info=exc)

    async def _post_webhook(self, provider_message_id: str, msg: OutgoingMessage) -> None:
        await asyncio.sleep(self.config["delivery_delay_ms"] / 1000)
        bounced = self._random.random() < self.config["bounce_rate"]
        now = int(time.time())
        events = [
            event(provider_message_id, "sent", msg.to, now),
            event(
                provider_message_id,
                "bounced" if bounced else "delivered",
                msg.to,
                now,
                reason=BOUNCE_REASONS.get(msg.channel, "bounced") if bounced else None,
            ),
        ]
        body = orjson.dumps({"events": events})
        problem = ""
        for attempt in range(WEBHOOK_ATTEMPTS):
            if attempt:
                await asyncio.sleep(WEBHOOK_BACKOFF_S * 2 ** (attempt - 1))
            headers = {
                "Content-Type": "application/json",
                "X-Sandbox-Signature": signing.sign(self.webhook_key, body),
            }
            try:
                response = await self.http.post(self.webhook_url, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return
                problem = f"HTTP {response.status_code}"
            log.warning("sandbox webhook %s attempt %d: %s", provider_message_id, attempt + 1, problem)
        raise RuntimeError(
            f"webhook for {provider_message_id} not accepted after {WEBHOOK_ATTEMPTS} attempts: {problem}"
        )


def event(
    provider_message_id: str, status: str, recipient: str, timestamp: int, *, reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "message_id": provider_message_id,
        "status": status,
        "timestamp": timestamp,
        "recipient": recipient,
        "reason": reason,
    }


def parse_error(body: Any) -> tuple[str, str | None] | None:
    """A sink may answer `{"detail"|"error"|"message": "..."}`; anything else falls back to the text."""
    for key in ("detail", "error", "message"):
        if isinstance(body, dict) and isinstance(body.get(key), str):
            return body[key], None
    return None
