"""Where inbound messages arrive (DESIGN §8), verified before anything is parsed.

* Twilio and WhatsApp post inbound messages to the connection's own `/webhooks/{provider_id}`,
  verified there (`server/webhooks/api.py` hands verified bodies over: `twilio_incoming`,
  `whatsapp_messages`).
* Email arrives on `/webhooks/{provider_id}/inbound`: Mailgun Routes `forward()` (signed with
  `timestamp`/`token`/`signature` like Mailgun's webhooks, checked by the same function) and
  SendGrid Inbound Parse (unsigned by SendGrid: the URL carries the connection's `?token=`, an
  unguessable secret shown once; only its SHA-256 is stored)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import time

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from server.api import json_response
from server.conversations import service
from server.conversations.inbound import Inbound, MalformedInbound, mail, twilio, whatsapp
from server.conversations.models import InboundToken
from server.db import utcnow
from server.errors import Problem
from server.providers.models import Provider
from server.services import Services
from server.webhooks import replay
from server.webhooks.verify import InvalidSignature, SignedOnce, verify_mailgun

log = logging.getLogger("switchboard.conversations")

TWIML_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
EMAIL_KINDS = frozenset({"mailgun", "sendgrid"})


def poke(services: Services, workspace_id: int) -> None:
    """Publish the committed events at once (SQLite has no NOTIFY to wake the relay)."""
    services.poke(workspace_id)


async def store(
    services: Services,
    *,
    workspace_id: int,
    provider_id: int,
    items: list[Inbound],
    signed: SignedOnce | None = None,
) -> service.Received:
    """`signed`: a signature that does not cover the content (Mailgun), claimed with it in the same
    transaction (server/webhooks/replay.py): other content under a seen token is refused."""
    if not items:
        return service.Received(0, 0)
    async with services.db.transaction() as s:
        if signed is not None and not (await replay.claim(s, [(provider_id, signed)]))[0]:
            raise _refused("signature token replayed with other content")
        result = await service.receive(
            s,
            workspace_id=workspace_id,
            provider_id=provider_id,
            secret=services.settings.secret_key,
            items=items,
        )
    if result.stored:
        poke(services, workspace_id)
    return result


# --- handed over by /webhooks/{provider_id} once verified ------------------------------------


async def twilio_incoming(
    services: Services, *, workspace_id: int, provider_id: int, body: bytes
) -> Response:
    """An incoming SMS/MMS or WhatsApp message from Twilio: stored once, answered with empty TwiML."""
    try:
        item = twilio.parse(body, utcnow())
    except MalformedInbound as exc:
        raise Problem(400, str(exc)) from None
    await store(services, workspace_id=workspace_id, provider_id=provider_id, items=[item])
    return Response(TWIML_EMPTY, 200, media_type="text/xml")


async def whatsapp_messages(
    services: Services, *, workspace_id: int, provider_id: int, body: bytes
) -> service.Received:
    """The `messages` of a Cloud API webhook (its `statuses` go the delivery-event way)."""
    try:
        items = whatsapp.parse(body, utcnow())
    except MalformedInbound as exc:
        raise Problem(400, str(exc)) from None
    return await store(services, workspace_id=workspace_id, provider_id=provider_id, items=items)


# --- /webhooks/{provider_id}/inbound: email ----------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_inbound_token(session: AsyncSession, *, provider: Provider) -> str | None:
    """A new inbound token for an email connection (replacing any), or None for other kinds."""
    if provider.kind != "sendgrid":
        return None
    token = secrets.token_urlsafe(32)
    row = await session.get(InboundToken, provider.id)
    if row is None:
        session.add(
            InboundToken(
                provider_id=provider.id, workspace_id=provider.workspace_id, token_sha256=_token_hash(token)
            )
        )
    else:
        row.token_sha256 = _token_hash(token)
    await session.flush()
    return token


def inbound_url(base_url: str, provider_id: int, kind: str, token: str | None = None) -> str | None:
    """Where the provider posts inbound messages; SendGrid's carries the token when it is shown."""
    base = f"{base_url.rstrip('/')}/webhooks/{provider_id}"
    if kind in ("twilio", "whatsapp", "sandbox"):
        return base
    if kind == "mailgun":
        return f"{base}/inbound"
    if kind == "sendgrid":
        return f"{base}/inbound?token={token}" if token else f"{base}/inbound?token=<shown once at creation>"
    return None


def _refused(reason: str) -> Problem:
    log.warning("inbound email refused: %s", reason)
    return Problem(401, "The inbound request is not signed or its token is wrong.")


async def receive_email(request: Request) -> Response:
    raw = request.path_params["provider_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Problem(404, "No such provider connection.")
    services = request.app.state.services
    async with services.db.transaction() as s:
        provider = await s.get(Provider, int(raw))
        token_row = await s.get(InboundToken, int(raw)) if provider is not None else None
    if provider is None or provider.kind not in EMAIL_KINDS:
        raise Problem(404, "No such provider connection.")
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    now = utcnow()
    signed: SignedOnce | None = None
    if provider.kind == "sendgrid":
        given = request.query_params.get("token", "")
        if token_row is None or not hmac.compare_digest(_token_hash(given), token_row.token_sha256):
            raise _refused("bad or missing token")
        try:
            item = mail.parse_sendgrid(mail.read_form(ctype, body), now)
        except MalformedInbound as exc:
            raise Problem(400, str(exc)) from None
    else:
        try:
            parts = mail.read_form(ctype, body)
        except MalformedInbound as exc:
            raise _refused(str(exc)) from None
        signature = mail.mailgun_signature(parts)
        try:
            # The same check as Mailgun's event webhooks (server/webhooks/verify.py), which read
            # the three values from a JSON body.
            signed = verify_mailgun(
                str(provider.config.get("webhook_signing_key") or ""),
                json.dumps({"signature": signature}).encode(),
                now=time.time(),
            )
        except InvalidSignature as exc:
            raise _refused(str(exc)) from None
        try:
            item = mail.parse_mailgun(parts, now)
        except MalformedInbound as exc:
            raise Problem(400, str(exc)) from None
        # The signature covers timestamp + token only: bind the token to this content.
        signed = dataclasses.replace(signed, digest=mail.form_digest(parts, skip=mail.SIGNATURE_FIELDS))
    result = await store(
        services, workspace_id=provider.workspace_id, provider_id=provider.id, items=[item], signed=signed
    )
    return json_response({"stored": result.stored, "duplicates": result.duplicates})


routes: list[BaseRoute] = [Route("/webhooks/{provider_id}/inbound", receive_email, methods=["POST"])]
