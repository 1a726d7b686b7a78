"""The sandbox provider: accepts every send, then posts realistic signed delivery webhooks back.

Config: `delivery_delay_ms` (default 1500; negative turns webhooks off, as benchmarks do),
`bounce_rate` (0..1), `sink_url` (optional: each send is first POSTed there as JSON with an
`Idempotency-Key` header, which is how benchmarks and fault tests count duplicates).

Webhook body: `{"events": [{"id", "message_id", "status", "timestamp", "recipient", "reason"}]}`
with a "sent" event, then "delivered" or "bounced", for every message whose delay has passed (up
to `WEBHOOK_BATCH` messages per POST, as SendGrid and Mailgun batch their event webhooks: one POST
per message would cap a campaign at what one connection can post), signed `X-Sandbox-Signature`
with `server.signing.sign(webhook_key, raw_body)`.

It also plays the customers (the demo's first five minutes, issue 16): with `customer_reply_rate`
> 0, that share of SMS and WhatsApp sends is answered, after about `customer_reply_delay_ms`, by
an incoming message from the recipient's number, posted exactly as Twilio posts one (form-encoded,
`X-Twilio-Signature` with `customer_auth_token`) to the Twilio connection `customer_provider_id`
of the same deployment. So the reply takes the real inbound path, verification included; an agent's
answer is a send like any other and may be answered again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
import orjson

from server import signing
from server.providers.adapters import http
from server.providers.adapters.base import Adapter, OutgoingMessage, SendResult
from server.providers.adapters.fields import Fields
from server.webhooks.verify import twilio_signature

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = 3
WEBHOOK_BATCH = 500  # messages (two events each) per delivery webhook POST
WEBHOOK_BACKOFF_S = 0.5  # doubled after each failed attempt: the app may be restarting
DEFAULT_NUMBER = "+15005550006"  # Twilio's test number: what the demo's customers write to
CUSTOMER_CHANNELS = frozenset({"sms", "whatsapp"})  # what a Twilio number receives
# What the demo's customers say back: short, harmless (no STOP or other keyword a consent rule acts on).
CUSTOMER_REPLIES = (
    "Thanks, got it!",
    "Could we make it Thursday instead?",
    "Great, see you then 👍",
    "What time exactly?",
    "Who is this? I don't think I signed up for this.",
    "Yes please, that works for me.",
    "Can you call me back this afternoon?",
    "Perfect, thank you so much.",
)
BOUNCE_REASONS = {
    "email": "550 5.1.1 The email account that you tried to reach does not exist",
    "sms": "30005 Unknown destination handset",
    "whatsapp": "131026 Message undeliverable",
    "chat": "channel_not_found",
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Due:
    at: float  # monotonic time the message's events are posted
    provider_message_id: str
    to: str
    channel: str


class SandboxAdapter(Adapter):
    kind: ClassVar[str] = "sandbox"
    channels: ClassVar[frozenset[str]] = frozenset({"email", "sms", "whatsapp", "chat"})
    required_keys: ClassVar[frozenset[str]] = frozenset()
    secret_keys: ClassVar[frozenset[str]] = frozenset({"customer_auth_token"})
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
        self._webhooks: set[asyncio.Task[None]] = set()  # the customers' replies, and the flusher
        self._due: deque[_Due] = deque()  # delivery events not posted yet, in due order
        self._flusher: asyncio.Task[None] | None = None
        self._posting = 0  # messages in the POST under way

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.integer("delivery_delay_ms", default=1500, maximum=3_600_000)
        fields.number("bounce_rate", default=0.0, minimum=0.0, maximum=1.0)
        fields.url("sink_url")
        if fields.given("customer_provider_id"):  # the customers' replies: all or nothing
            fields.integer("customer_provider_id", default=0, minimum=1, maximum=2**62)
            fields.string("customer_auth_token", required=True)
            fields.number("customer_reply_rate", default=0.25, minimum=0.0, maximum=1.0)
            fields.integer("customer_reply_delay_ms", default=5000, minimum=0, maximum=3_600_000)
            fields.string("customer_number", default=DEFAULT_NUMBER, pattern=r"\+[1-9][0-9]{6,14}")

    def sender(self, msg: OutgoingMessage) -> str | None:
        """Our number as the simulated customers see it (the one their replies are sent to)."""
        if msg.channel not in CUSTOMER_CHANNELS:
            return msg.from_address or None
        return msg.from_address or str(self.config.get("customer_number") or DEFAULT_NUMBER)

    async def send(self, msg: OutgoingMessage) -> SendResult:
        if sink_url := self.config.get("sink_url"):
            await http.post(
                self.http,
                sink_url,
                # Newer fields only when set: sinks written before them see the same body.
                content=orjson.dumps(
                    {
                        k: v
                        for k, v in dataclasses.asdict(msg).items()
                        if v
                        or k not in ("from_address", "reply_token", "unsubscribe_url", "unsubscribe_mailbox")
                    }
                ),
                headers={"Content-Type": "application/json", "Idempotency-Key": msg.idempotency_key},
                parse_error=parse_error,
            )
        provider_message_id = f"sbx-{uuid.uuid4()}"
        if self.config["delivery_delay_ms"] >= 0 and self.webhook_url:
            # One delay for every message of this connection: appending keeps the queue in due order.
            at = time.monotonic() + self.config["delivery_delay_ms"] / 1000
            self._due.append(_Due(at, provider_message_id, msg.to, msg.channel))
            if self._flusher is None:
                self._flusher = asyncio.create_task(
                    self._flush(), name=f"sandbox-webhooks-{self.provider_id}"
                )
                self._webhooks.add(self._flusher)
                self._flusher.add_done_callback(self._webhook_done)
        if self._customer_answers(msg):
            self._spawn(self._customer_reply(msg), f"sandbox-customer-{provider_message_id}")
        return SendResult(provider_message_id)

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._webhooks.add(task)
        task.add_done_callback(self._webhook_done)

    def _customer_answers(self, msg: OutgoingMessage) -> bool:
        return (
            msg.channel in CUSTOMER_CHANNELS
            and bool(msg.to)
            and bool(self.webhook_url)
            and int(self.config.get("customer_provider_id") or 0) > 0
            and bool(self.config.get("customer_auth_token"))
            and self._random.random() < float(self.config.get("customer_reply_rate") or 0.0)
        )

    def customer_url(self) -> str:
        """The Twilio connection's webhook URL: ours with its id (same deployment, same base)."""
        base = self.webhook_url.split("?", 1)[0].rsplit("/", 1)[0]
        return f"{base}/{int(self.config['customer_provider_id'])}"

    def customer_message(self, msg: OutgoingMessage) -> dict[str, str]:
        """What Twilio posts for an incoming message from `msg`'s recipient to our number."""
        prefix = "whatsapp:" if msg.channel == "whatsapp" else ""
        ours = self.sender(msg) or DEFAULT_NUMBER
        sid = "SM" + uuid.uuid4().hex
        return {
            "AccountSid": "AC" + "0" * 32,
            "ApiVersion": "2010-04-01",
            "Body": self._random.choice(CUSTOMER_REPLIES),
            "From": prefix + msg.to,
            "MessageSid": sid,
            "NumMedia": "0",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": prefix + ours.removeprefix("whatsapp:"),
        }

    async def _customer_reply(self, msg: OutgoingMessage) -> None:
        delay_s = self.config.get("customer_reply_delay_ms", 5000) / 1000
        await asyncio.sleep(delay_s * (0.5 + self._random.random()))
        form = self.customer_message(msg)
        url = self.customer_url()
        signature = twilio_signature(str(self.config["customer_auth_token"]), url, form.items())
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
        await self._post(url, urlencode(form).encode(), headers, what=f"customer reply {form['MessageSid']}")

    @property
    def pending_webhooks(self) -> int:
        """Messages whose delivery events are not posted yet, and customer replies under way."""
        return len(self._due) + self._posting + len(self._webhooks - {self._flusher})

    async def aclose(self) -> None:
        self._due.clear()
        tasks = list(self._webhooks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _webhook_done(self, task: asyncio.Task[None]) -> None:
        self._webhooks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sandbox webhook %s failed", task.get_name(), exc_info=exc)

    async def _flush(self) -> None:
        """Post the delivery events of every message whose delay has passed, a batch at a time,
        until none is waiting (`send` starts it again). A batch refused after its retries is
        logged and dropped, as one message's webhook was before: a real provider gives up too."""
        try:
            while self._due:
                wait = self._due[0].at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = time.monotonic()
                batch: list[_Due] = []
                while self._due and self._due[0].at <= now and len(batch) < WEBHOOK_BATCH:
                    batch.append(self._due.popleft())
                self._posting = len(batch)
                try:
                    await self._post_events(batch)
                except Exception:
                    log.exception("sandbox delivery webhook of %d message(s) failed", len(batch))
                finally:
                    self._posting = 0
        finally:
            self._flusher = None

    async def _post_events(self, batch: list[_Due]) -> None:
        now = int(time.time())
        events = []
        for d in batch:
            bounced = self._random.random() < self.config["bounce_rate"]
            events += [
                event(d.provider_message_id, "sent", d.to, now),
                event(
                    d.provider_message_id,
                    "bounced" if bounced else "delivered",
                    d.to,
                    now,
                    reason=BOUNCE_REASONS.get(d.channel, "bounced") if bounced else None,
                ),
            ]
        body = orjson.dumps({"events": events})
        more = f" and {len(batch) - 1} more" if len(batch) > 1 else ""
        await self._post(
            self.webhook_url,
            body,
            lambda: {
                "Content-Type": "application/json",
                "X-Sandbox-Signature": signing.sign(self.webhook_key, body),  # timestamped: per attempt
            },
            what=f"webhook for {batch[0].provider_message_id}{more}",
        )

    async def _post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
        *,
        what: str,
    ) -> None:
        """POST to the app, retried: it may be restarting."""
        problem = ""
        for attempt in range(WEBHOOK_ATTEMPTS):
            if attempt:
                await asyncio.sleep(WEBHOOK_BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = await self.http.post(
                    url, content=body, headers=headers() if callable(headers) else dict(headers)
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return
                problem = f"HTTP {response.status_code}"
            log.warning("sandbox %s attempt %d: %s", what, attempt + 1, problem)
        raise RuntimeError(f"{what} not accepted after {WEBHOOK_ATTEMPTS} attempts: {problem}")


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
