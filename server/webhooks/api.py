"""`/webhooks/{provider_id}`: where providers post delivery events (DESIGN §5).

The connection decides the format and the verification. Order matters: find the connection,
verify the raw body, only then parse it and store its events (`Ingest`: one transaction, shared
with the deliveries arriving at the same time)."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import asdict, replace

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from server.api import json_response
from server.conversations import webhooks as conversations
from server.conversations.inbound import twilio as twilio_inbound
from server.db import utcnow
from server.errors import Problem
from server.jsonlimits import TooDeep
from server.state import services_of
from server.webhooks.ingest import REVERIFY_AGE_S, Ingest, ProviderCache, ProviderInfo, for_app
from server.webhooks.parse import PARSERS, MalformedPayload, ProviderEvent, parse
from server.webhooks.replay import ReplayedSignature
from server.webhooks.verify import InvalidSignature, SignedOnce, verify_request

log = logging.getLogger("switchboard.webhooks")


def _provider_id(request: Request) -> int:
    """The id in the path, when it can be an id at all (no database read for the rest)."""
    raw = request.path_params["provider_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < 1:
        raise _not_found()
    return int(raw)


def signed_url(request: Request) -> str:
    """The URL the provider signed: our public URL behind a proxy, else the URL as requested."""
    public = services_of(request.app).settings.public_url
    if not public:
        return str(request.url)
    query = request.url.query
    return public.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def with_our_id_from_url(request: Request, events: list[ProviderEvent]) -> list[ProviderEvent]:
    """A status callback URL may carry our message id (`?sb_message_id=`). Twilio signs the URL, so
    it is as trustworthy as the body; it matches the message even before its SID is stored."""
    raw = request.query_params.get("sb_message_id", "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        return events
    return [e if e.our_message_id is not None else replace(e, our_message_id=int(raw)) for e in events]


def _not_found() -> Problem:
    return Problem(404, "No such provider connection.")


def _state(request: Request) -> tuple[ProviderCache, Ingest]:
    return for_app(request.app)


def _verify(provider: ProviderInfo, request: Request, body: bytes) -> SignedOnce | None:
    return verify_request(
        provider.kind,
        config=provider.config,
        webhook_key=provider.webhook_key,
        headers=request.headers,
        body=body,
        url=signed_url(request),
        now=time.time(),
    )


async def receive(request: Request) -> Response:
    """Verify, parse and apply one webhook delivery. Answers 200 with counts once its events are
    committed, including for repeats and for events about unknown messages (a provider retries
    anything else)."""
    provider_id = _provider_id(request)
    providers, ingest = _state(request)
    metrics = services_of(request.app).metrics
    provider = await providers.get(provider_id)
    if provider is None or provider.kind not in PARSERS:
        raise _not_found()
    body = await request.body()
    try:
        try:
            signed = _verify(provider, request, body)
        except InvalidSignature:
            # Perhaps the key was rotated since the row was cached: check against the row as it is now.
            provider = await providers.get(provider_id, max_age_s=REVERIFY_AGE_S)
            if provider is None or provider.kind not in PARSERS:
                raise _not_found() from None
            signed = _verify(provider, request, body)
    except InvalidSignature as exc:
        log.warning("webhook for provider %s refused: %s", provider_id, exc)
        kind = provider.kind if provider is not None else "unknown"
        metrics.webhook_rejections.labels(provider=kind, reason="signature").inc()
        raise Problem(401, "The webhook signature is missing, invalid or stale.") from None
    except TooDeep as exc:  # Mailgun's signature is inside the body: it is read, bounded, first
        kind = provider.kind if provider is not None else "unknown"
        metrics.webhook_rejections.labels(provider=kind, reason="malformed").inc()
        raise Problem(400, f"body {exc}") from None
    # --- inbound messages (conversations, DESIGN §8): verified above, stored in the same group commit
    services = services_of(request.app)
    if provider.kind == "twilio" and (form := twilio_inbound.incoming_form(body)) is not None:
        return await conversations.twilio_incoming(services, ingest, provider, form)
    # ---
    try:
        events = parse(provider.kind, body, now=utcnow())
    except MalformedPayload as exc:
        metrics.webhook_rejections.labels(provider=provider.kind, reason="malformed").inc()
        raise Problem(400, str(exc)) from None
    if provider.kind == "twilio":
        events = with_our_id_from_url(request, events)
    # --- inbound messages: WhatsApp `messages` beside `statuses` (conversations, DESIGN §8)
    items = conversations.whatsapp_items(body) if provider.kind == "whatsapp" else []
    # ---
    try:
        delivered = await ingest.deliver(provider, events, inbound=items, signed=signed)
    except ReplayedSignature:
        log.warning("webhook for provider %s refused: signature token replayed with other data", provider_id)
        metrics.webhook_rejections.labels(provider=provider.kind, reason="replay").inc()
        raise Problem(401, "The webhook signature was already used for other data.") from None
    result, inbound = delivered.events, delivered.inbound
    if inbound.stored:
        conversations.poke(services, provider.workspace_id)
    counted = metrics.webhook_events
    counted.labels(provider=provider.kind, outcome="applied").inc(result.recorded - result.unmatched)
    counted.labels(provider=provider.kind, outcome="duplicate").inc(result.duplicates)
    counted.labels(provider=provider.kind, outcome="unmatched").inc(result.unmatched)
    answer = asdict(result)
    if inbound.stored or inbound.duplicates:
        answer["inbound"] = {"stored": inbound.stored, "duplicates": inbound.duplicates}
    return json_response(answer)


async def handshake(request: Request) -> Response:
    """WhatsApp's subscription check: echo `hub.challenge` when `hub.verify_token` is ours."""
    provider = await _state(request)[0].get(_provider_id(request), max_age_s=0)
    if provider is None or provider.kind != "whatsapp":
        raise _not_found()
    expected = str(provider.config.get("verify_token") or "")
    params = request.query_params
    token = params.get("hub.verify_token", "")
    challenge = params.get("hub.challenge")
    if (
        params.get("hub.mode") != "subscribe"
        or not expected
        or challenge is None
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        raise Problem(403, "The verify token does not match this connection.")
    return PlainTextResponse(challenge)


async def endpoint(request: Request) -> Response:
    if request.method == "GET":
        return await handshake(request)
    return await receive(request)


routes: list[BaseRoute] = [Route("/webhooks/{provider_id}", endpoint, methods=["GET", "POST"])]
