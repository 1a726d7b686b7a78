"""Where inbound messages arrive (DESIGN §8), verified before anything is parsed.

* Twilio and WhatsApp post inbound messages to the connection's own `/webhooks/{provider_id}`,
  verified there (`server/webhooks/api.py` hands verified bodies over: `twilio_incoming`,
  `whatsapp_items`). Every inbound message is stored through the webhooks' group commit
  (`server/webhooks/ingest.py`): concurrent deliveries share a transaction and one `emit_many`.
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
from server.conversations.inbound import Inbound, MalformedInbound, mail, twilio, whatsapp
from server.conversations.models import InboundToken
from server.db import utcnow
from server.errors import Problem
from server.providers.models import Provider
from server.services import Services
from server.state import services_of
from server.webhooks import replay
from server.webhooks.ingest import REVERIFY_AGE_S, Ingest, ProviderInfo, for_app
from server.webhooks.verify import InvalidSignature, SignedOnce, verify_mailgun

log = logging.getLogger("switchboard.conversations")

TWIML_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
EMAIL_KINDS = frozenset({"mailgun", "sendgrid"})


def poke(services: Services, workspace_id: int) -> None:
    """Publish the committed events at once (SQLite has no NOTIFY to wake the relay)."""
    services.poke(workspace_id)


# --- handed over by /webhooks/{provider_id} once verified ------------------------------------


async def twilio_incoming(
    services: Services, ingest: Ingest, provider: ProviderInfo, form: dict[str, str]
) -> Response:
    """An incoming SMS/MMS or WhatsApp message from Twilio (its form, verified): stored once in the
    webhooks' group commit, answered with empty TwiML."""
    try:
        item = twilio.parse(form, utcnow())
    except MalformedInbound as exc:
        raise Problem(400, str(exc)) from None
    delivered = await ingest.deliver(provider, inbound=[item])
    if delivered.inbound.stored:
        poke(services, provider.workspace_id)
    return Response(TWIML_EMPTY, 200, media_type="text/xml")


def whatsapp_items(body: bytes) -> list[Inbound]:
    """The `messages` of a Cloud API webhook (its `statuses` go the delivery-event way, in the
    same delivery)."""
    try:
        return whatsapp.parse(body, utcnow())
    except MalformedInbound as exc:
        raise Problem(400, str(exc)) from None


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


def _verify_mailgun(provider: ProviderInfo, parts: list[mail.FormPart]) -> SignedOnce:
    # The same check as Mailgun's event webhooks (server/webhooks/verify.py), which read the
    # three values from a JSON body.
    return verify_mailgun(
        str(provider.config.get("webhook_signing_key") or ""),
        json.dumps({"signature": mail.mailgun_signature(parts)}).encode(),
        now=time.time(),
    )


async def receive_email(request: Request) -> Response:
    raw = request.path_params["provider_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Problem(404, "No such provider connection.")
    services = services_of(request.app)
    providers, ingest = for_app(request.app)
    provider = await providers.get(int(raw))
    if provider is None or provider.kind not in EMAIL_KINDS:
        raise Problem(404, "No such provider connection.")
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    now = utcnow()
    signed: SignedOnce | None = None
    if provider.kind == "sendgrid":
        # Read on every request, not cached: a token shown anew replaces the old one at once.
        async with services.db.transaction() as s:
            token_row = await s.get(InboundToken, provider.id)
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
        try:
            try:
                signed = _verify_mailgun(provider, parts)
            except InvalidSignature:
                # Perhaps the key was rotated since the row was cached: check against the row as it is now.
                fresh = await providers.get(provider.id, max_age_s=REVERIFY_AGE_S)
                if fresh is None or fresh.kind != provider.kind:
                    raise Problem(404, "No such provider connection.") from None
                provider = fresh
                signed = _verify_mailgun(provider, parts)
        except InvalidSignature as exc:
            raise _refused(str(exc)) from None
        try:
            item = mail.parse_mailgun(parts, now)
        except MalformedInbound as exc:
            raise Problem(400, str(exc)) from None
        # The signature covers timestamp + token only: bind the token to this content.
        signed = dataclasses.replace(signed, digest=mail.form_digest(parts, skip=mail.SIGNATURE_FIELDS))
    try:
        delivered = await ingest.deliver(provider, inbound=[item], signed=signed)
    except replay.ReplayedSignature:
        raise _refused("signature token replayed with other content") from None
    result = delivered.inbound
    if result.stored:
        poke(services, provider.workspace_id)
    return json_response({"stored": result.stored, "duplicates": result.duplicates})


routes: list[BaseRoute] = [Route("/webhooks/{provider_id}/inbound", receive_email, methods=["POST"])]
