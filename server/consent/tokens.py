"""Unsubscribe tokens: `/u/{token}` names who opts out of what, signed so nobody can forge one.

A token is `<payload>.<mac>`, both base64url: the payload is `v1:<workspace>:<contact>:<channel>:
<scope>:<issued unix s>`, the mac an HMAC-SHA256 over it with a key derived from the secret key
(never the key itself, which also signs sessions). Tokens never expire: RFC 8058 mail is opened
months later and an unsubscribe must still work. After `SWITCHBOARD_SECRET_KEY` is rotated, keys
listed in `SWITCHBOARD_PREVIOUS_SECRET_KEYS` still verify the tokens they signed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

from server.settings import Settings

VERSION = "v1"
_PURPOSE = b"switchboard unsubscribe v1"
MAX_TOKEN_CHARS = 400  # longer is garbage: refused before any work


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What a valid token asks for."""

    workspace_id: int
    contact_id: int
    channel: str
    scope: str
    issued: int  # unix seconds: which link it was (the ledger's evidence)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(_key(secret), payload, hashlib.sha256).digest()


def sign(
    secret: str, *, workspace_id: int, contact_id: int, channel: str, scope: str, issued: int | None = None
) -> str:
    t = int(time.time()) if issued is None else issued
    payload = f"{VERSION}:{workspace_id}:{contact_id}:{channel}:{scope}:{t}".encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(secrets: Sequence[str], token: str) -> Unsubscribe | None:
    """What the token asks for, when one of `secrets` signed it; None for anything else."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return None
    head, _, tail = token.partition(".")
    try:
        payload, mac = _unb64(head), _unb64(tail)
    except (binascii.Error, ValueError):
        return None
    ok = False
    for secret in secrets:  # every key is tried: the time taken does not say which one matched
        ok |= hmac.compare_digest(_mac(secret, payload), mac)
    if not ok:
        return None
    try:
        version, ws, contact, channel, scope, issued = payload.decode().split(":")
        if version != VERSION:
            return None
        return Unsubscribe(int(ws), int(contact), channel, scope, int(issued))
    except ValueError:
        return None


def secrets_of(settings: Settings) -> list[str]:
    """The current secret key first, then the previous ones still honoured."""
    return [settings.secret_key, *settings.previous_secret_keys]


def base_url(settings: Settings) -> str | None:
    """Where recipients reach `/u/…`: the public URL, else the address `serve` listens on."""
    url = settings.public_url or settings.serve_url
    return url.rstrip("/") if url else None


def unsubscribe_url(
    settings: Settings, *, workspace_id: int, contact_id: int, channel: str, scope: str
) -> str:
    token = sign(
        settings.secret_key, workspace_id=workspace_id, contact_id=contact_id, channel=channel, scope=scope
    )
    return f"{base_url(settings) or ''}/u/{token}"


class Links:
    """The `{{ unsubscribe_url }}` of each recipient (scope: every sender of the channel)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def url(self, workspace_id: int, contact_id: int, channel: str) -> str:
        return unsubscribe_url(
            self.settings, workspace_id=workspace_id, contact_id=contact_id, channel=channel, scope="all"
        )
