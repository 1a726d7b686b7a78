"""Unsubscribe tokens: `/u/{token}` names who opts out of what, signed so nobody can forge one.

A token is `<payload>.<mac>`, both base64url: the payload is `v1:<workspace>:<contact>:<channel>:
<scope>:<issued unix s>`, the mac an HMAC-SHA256 over it with a key derived from the secret key
(never the key itself, which also signs sessions). Tokens never expire: RFC 8058 mail is opened
months later and an unsubscribe must still work. After `SWITCHBOARD_SECRET_KEY` is rotated, keys
listed in `SWITCHBOARD_PREVIOUS_SECRET_KEYS` still verify the tokens they signed."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
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


@functools.lru_cache(maxsize=8)  # the current and previous secret keys; a campaign signs a link per contact
def _key(secret: str) -> bytes:
    return hmac.digest(secret.encode(), _PURPOSE, "sha256")


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.digest(_key(secret), payload, "sha256")


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

    def mailbox(self, workspace_id: int, contact_id: int, channel: str) -> str:
        return mailbox(
            self.settings.secret_key, workspace_id=workspace_id, contact_id=contact_id, channel=channel
        )


# The mailto of `List-Unsubscribe` (RFC 2369): `unsubscribe+<contact>.<channel>.<mac>@<inbound domain>`.
# A local part is at most 64 characters and mail systems may fold its case, so it carries a short,
# lower-case form: the workspace is the inbound connection's, and the MAC is 80 bits of HMAC-SHA256
# with the same derived key (brute force needs 2^80 tries through the mail system).
MAILBOX_PREFIX = "unsubscribe+"
_MAILBOX = re.compile(r"unsubscribe\+([1-9][0-9]{0,17})\.([a-z]{1,16})\.([a-z2-7]{16})")


def _mailbox_mac(secret: str, workspace_id: int, contact_id: int, channel: str) -> str:
    raw = _mac(secret, f"mailto:{workspace_id}:{contact_id}:{channel}".encode())
    return base64.b32encode(raw[:10]).decode().lower()


def mailbox(secret: str, *, workspace_id: int, contact_id: int, channel: str) -> str:
    """The local part of the unsubscribe address."""
    return f"{MAILBOX_PREFIX}{contact_id}.{channel}.{_mailbox_mac(secret, workspace_id, contact_id, channel)}"


def verify_mailbox(secrets: Sequence[str], workspace_id: int, local: str) -> Unsubscribe | None:
    """What an email to `local@…` received by `workspace_id`'s connection asks for, if we signed it."""
    m = _MAILBOX.fullmatch(local.strip().lower())
    if m is None:
        return None
    contact_id, channel, mac = int(m.group(1)), m.group(2), m.group(3)
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(_mailbox_mac(secret, workspace_id, contact_id, channel), mac)
    return Unsubscribe(workspace_id, contact_id, channel, "all", 0) if ok else None
