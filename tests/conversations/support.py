"""A workspace with one connection per inbound provider, and requests signed as each provider signs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import uuid
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette
from twilio.request_validator import RequestValidator

from server.auth import service as auth_service
from server.conversations.models import Conversation, InboundMessage
from server.conversations.webhooks import issue_inbound_token
from server.db import Database
from server.providers.models import Provider

TW_TOKEN = "f1e2d3c4b5a697887766554433221100"
WA_SECRET = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
MG_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
BASE = "http://testserver"
OUR_SMS = "+15005550006"
OUR_WA = "+15550783881"


class World:
    def __init__(self, app: Starlette, workspace: str = "Acme") -> None:
        self.app = app
        self.db: Database = app.state.services.db
        self.workspace = workspace
        self.ws = 0
        self.providers: dict[str, int] = {}
        self.sendgrid_token = ""
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)

    async def build(self) -> World:
        async with self.db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name=self.workspace)
            self.ws = ws.id
            configs = {
                "twilio": ("sms", {"auth_token": TW_TOKEN}),
                "whatsapp": ("whatsapp", {"app_secret": WA_SECRET}),
                "mailgun": ("email", {"webhook_signing_key": MG_KEY}),
                "sendgrid": ("email", {}),
            }
            for kind, (channel, config) in configs.items():
                p = Provider(
                    workspace_id=ws.id,
                    name=kind,
                    kind=kind,
                    channel=channel,
                    config=config,
                    webhook_key="k" * 32,
                )
                s.add(p)
                await s.flush()
                self.providers[kind] = p.id
                if kind == "sendgrid":
                    self.sendgrid_token = await issue_inbound_token(s, provider=p) or ""
        return self

    async def close(self) -> None:
        await self.http.aclose()

    # --- Twilio -------------------------------------------------------------------------------

    def twilio_form(
        self, body: str, *, sender: str = "+15558675310", sid: str | None = None, **extra: str
    ) -> dict[str, str]:
        form = {
            "ToCountry": "US",
            "SmsMessageSid": sid or "SM" + uuid.uuid4().hex,
            "NumMedia": "0",
            "SmsSid": "",
            "SmsStatus": "received",
            "Body": body,
            "To": OUR_SMS,
            "NumSegments": "1",
            "From": sender,
            "ApiVersion": "2010-04-01",
            "AccountSid": "AC" + "0" * 32,
        }
        form["MessageSid"] = form["SmsSid"] = form["SmsMessageSid"]
        form.update(extra)
        return form

    async def post_twilio(self, form: dict[str, str], *, token: str = TW_TOKEN) -> httpx.Response:
        url = f"{BASE}/webhooks/{self.providers['twilio']}"
        signature = RequestValidator(token).compute_signature(url, form)
        return await self.http.post(
            url,
            content=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
        )

    # --- WhatsApp -----------------------------------------------------------------------------

    async def post_whatsapp(self, doc: dict[str, Any], *, secret: str = WA_SECRET) -> httpx.Response:
        body = json.dumps(doc).encode()
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return await self.http.post(
            f"/webhooks/{self.providers['whatsapp']}",
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig},
        )

    # --- email --------------------------------------------------------------------------------

    async def post_sendgrid(
        self, message: EmailMessage | bytes, *, token: str | None = None, to: str = "support@acme.test"
    ) -> httpx.Response:
        """As Inbound Parse posts with "POST the raw, full MIME message": the MIME bytes as they came."""
        raw = message if isinstance(message, bytes) else bytes(message)
        fields: list[tuple[str, bytes]] = [
            ("to", to.encode()),
            ("envelope", json.dumps({"to": [to], "from": "someone@example.test"}).encode()),
            ("charsets", b'{"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}'),
            ("SPF", b"pass"),
            ("email", raw),
        ]
        body, ctype = multipart(fields, [])
        return await self.http.post(
            f"/webhooks/{self.providers['sendgrid']}/inbound",
            params={"token": self.sendgrid_token if token is None else token},
            content=body,
            headers={"Content-Type": ctype},
        )

    async def post_mailgun(
        self,
        fields: dict[str, str],
        *,
        key: str = MG_KEY,
        files: list[tuple[str, str, bytes, str]] = (),  # type: ignore[assignment]
        ts: int | None = None,
        tok: str | None = None,
    ) -> httpx.Response:
        """As a Mailgun Route's forward() posts: multipart, signed with timestamp/token/signature."""
        stamp, tok = str(int(time.time()) if ts is None else ts), tok or secrets.token_hex(25)
        sig = hmac.new(key.encode(), (stamp + tok).encode(), hashlib.sha256).hexdigest()
        data = {**fields, "timestamp": stamp, "token": tok, "signature": sig}
        if files:
            data["attachment-count"] = str(len(files))
        body, ctype = multipart([(k, v.encode()) for k, v in data.items()], list(files))
        return await self.http.post(
            f"/webhooks/{self.providers['mailgun']}/inbound", content=body, headers={"Content-Type": ctype}
        )

    # --- state --------------------------------------------------------------------------------

    async def counts(self) -> tuple[int, int]:
        async with self.db.transaction() as s:
            n_conv = (await s.execute(select(func.count()).select_from(Conversation))).scalar_one()
            n_msg = (await s.execute(select(func.count()).select_from(InboundMessage))).scalar_one()
        return n_conv, n_msg


def multipart(fields: list[tuple[str, bytes]], files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """multipart/form-data as providers send it; field values are raw bytes (any charset)."""
    boundary = "xYzZY" + uuid.uuid4().hex
    out = b""
    for name, value in fields:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
        )
    for name, filename, data, ctype in files:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def whatsapp_doc(
    messages: list[dict[str, Any]],
    *,
    name: str = "Kerry Fisher",
    wa_id: str = "16315551181",
    statuses: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
        "messages": messages,
    }
    if statuses is not None:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def wa_text(
    body: str, *, wamid: str | None = None, sender: str = "16315551181", ts: int | None = None
) -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid or "wamid." + uuid.uuid4().hex,
        "timestamp": str(ts or int(time.time())),
        "text": {"body": body},
        "type": "text",
    }


async def whatsapp_template(agent: httpx.AsyncClient, **fields: Any) -> int:
    """A `whatsapp` template made through the API (with `fields`, e.g. its `whatsapp` metadata); its id."""
    body = {
        "name": "Order update",
        "channel": "whatsapp",
        "body": "Hi {{ name }}, your order {{ order }} shipped.",
    }
    r = await agent.post("/api/v1/templates", json=body | fields)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def settled(agent: httpx.AsyncClient, message_id: int) -> dict[str, Any]:
    """The message once the dispatcher has sent it or given up (about 10 s at most)."""
    for _ in range(200):
        m = (await agent.get(f"/api/v1/messages/{message_id}")).json()
        if m["status"] in ("sent", "failed"):
            return m
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} still {m['status']}")
