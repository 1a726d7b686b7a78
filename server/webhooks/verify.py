"""Checking that an inbound webhook really comes from the provider (DESIGN §5).

Pure functions: each takes the connection's key, the request headers (lower-cased names), the raw
body, the URL and the current time, and returns None or raises `InvalidSignature`. Every secret
comparison is constant-time. Nothing here parses more of the body than the signature needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from server import signing
from server.jsonlimits import TooDeep, loads_bounded

# Provider payloads nest a few levels (Mailgun's user variables are the deepest); a body nested
# deeper than this is refused as malformed (`TooDeep`, 400) before anything walks it.
WEBHOOK_MAX_DEPTH = 64

# A signed timestamp further than this from our clock is refused: it bounds how long a captured
# request can be replayed (the dedupe on provider event ids catches the rest).
TOLERANCE_S = 300

SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
TWILIO_SIGNATURE = "x-twilio-signature"
WHATSAPP_SIGNATURE = "x-hub-signature-256"
SANDBOX_SIGNATURE = "x-sandbox-signature"


class InvalidSignature(Exception):
    """The request is not proven to come from the provider: answer 401 and record nothing."""


@dataclass(frozen=True, slots=True)
class SignedOnce:
    """A verified signature that does not cover the data it came with (Mailgun signs timestamp +
    token only). The token may be seen again only with the same data (`digest`) until `expires_at`
    (unix seconds): a provider's retry, not a captured signature carrying other event data."""

    token_hash: str
    digest: str
    expires_at: float


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _check_fresh(timestamp: str | None, now: float) -> int:
    try:
        t = int(float(timestamp)) if timestamp is not None else None
    except ValueError:
        t = None
    if t is None:
        raise InvalidSignature("missing or invalid timestamp")
    if abs(now - t) > TOLERANCE_S:
        raise InvalidSignature("timestamp outside the 5-minute window")
    return t


# --- SendGrid: ECDSA P-256 / SHA-256 over timestamp + raw body -------------------------------


@lru_cache(maxsize=256)
def load_sendgrid_key(key: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or as PEM."""
    text = key.strip()
    try:
        if text.startswith("-----BEGIN"):
            loaded = load_pem_public_key(text.encode())
        else:
            loaded = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise InvalidSignature("the connection's SendGrid public key cannot be loaded") from exc
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(loaded.curve, ec.SECP256R1):
        raise InvalidSignature("the connection's SendGrid public key is not a P-256 key")
    return loaded


def verify_sendgrid(public_key: str, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
    signature = headers.get(SENDGRID_SIGNATURE)
    if not signature:
        raise InvalidSignature("missing signature")
    timestamp = headers.get(SENDGRID_TIMESTAMP)
    _check_fresh(timestamp, now)
    if not public_key:
        raise InvalidSignature("no public key configured")
    try:
        der_signature = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InvalidSignature("signature is not base64") from exc
    key = load_sendgrid_key(public_key)
    try:
        key.verify(der_signature, str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    except _CryptoInvalidSignature as exc:
        raise InvalidSignature("bad signature") from exc


# --- Mailgun: hex HMAC-SHA256(signing key, timestamp + token), inside the JSON body -----------


def verify_mailgun(signing_key: str, body: bytes, *, now: float) -> SignedOnce:
    """Raises `InvalidSignature`, or `TooDeep` (malformed, 400) for a body nested too deep."""
    try:
        doc = loads_bounded(body, max_depth=WEBHOOK_MAX_DEPTH, lenient=True)
    except TooDeep:
        raise
    except (ValueError, UnicodeDecodeError):
        doc = None
    sig: Any = doc.get("signature") if isinstance(doc, dict) else None
    if not isinstance(sig, dict) or not all(
        isinstance(sig.get(k), str | int) for k in ("timestamp", "token", "signature")
    ):
        raise InvalidSignature("missing signature")
    timestamp, token, given = str(sig["timestamp"]), str(sig["token"]), str(sig["signature"])
    signed_at = _check_fresh(timestamp, now)
    if not signing_key:
        raise InvalidSignature("no signing key configured")
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise InvalidSignature("bad signature")
    assert isinstance(doc, dict)
    data = json.dumps(doc.get("event-data"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return SignedOnce(
        token_hash=hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest(),
        digest=hashlib.sha256(data.encode()).hexdigest(),
        expires_at=signed_at + TOLERANCE_S,
    )


# --- Twilio: base64 HMAC-SHA1(auth token, URL + sorted name+value pairs) ----------------------


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature Twilio computes for a POST to `url` with these form parameters."""
    by_name: dict[str, set[str]] = {}
    for name, value in params:
        by_name.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(by_name) for value in sorted(by_name[name]))
    mac = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def _url_variants(url: str) -> list[str]:
    """The URL with and without its default port: Twilio is not consistent about which it signs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    without = urlunsplit(parts._replace(netloc=prefix + host))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    return list(dict.fromkeys([url, without, with_port]))


def verify_twilio(auth_token: str, headers: Mapping[str, str], body: bytes, *, url: str) -> None:
    given = headers.get(TWILIO_SIGNATURE)
    if not given:
        raise InvalidSignature("missing signature")
    if not auth_token:
        raise InvalidSignature("no auth token configured")
    try:
        params = parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise InvalidSignature("body is not a form") from exc
    # The URL as given first; the port variants only when it fails. Which variant matched is no
    # secret, so stopping early leaks nothing; each comparison itself is constant-time.
    if hmac.compare_digest(twilio_signature(auth_token, url, params).encode(), given.encode()):
        return
    for candidate in _url_variants(url)[1:]:
        if hmac.compare_digest(twilio_signature(auth_token, candidate, params).encode(), given.encode()):
            return
    raise InvalidSignature("bad signature")


# --- WhatsApp Cloud API: sha256=<hex HMAC-SHA256(app secret, raw body)> -----------------------


def verify_whatsapp(app_secret: str, headers: Mapping[str, str], body: bytes) -> None:
    header = headers.get(WHATSAPP_SIGNATURE)
    if not header:
        raise InvalidSignature("missing signature")
    if not app_secret:
        raise InvalidSignature("no app secret configured")
    scheme, _, given = header.partition("=")
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    if scheme.strip().lower() != "sha256" or not hmac.compare_digest(
        expected.encode(), given.strip().lower().encode()
    ):
        raise InvalidSignature("bad signature")


# --- sandbox: our own `t=..,v1=..` signature (server.signing) ----------------------------------


def verify_sandbox(webhook_key: str, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
    header = headers.get(SANDBOX_SIGNATURE)
    if not header:
        raise InvalidSignature("missing signature")
    if not signing.verify([webhook_key], header, body, now=now):
        raise InvalidSignature("bad signature or stale timestamp")


def verify_request(
    kind: str,
    *,
    config: Mapping[str, Any],
    webhook_key: str,
    headers: Mapping[str, str],
    body: bytes,
    url: str,
    now: float,
) -> SignedOnce | None:
    """Verify a webhook for a connection of this kind; raises `InvalidSignature` when not proven.
    Returns what must be remembered to refuse a replay when the signature does not cover the body."""
    h = lower_headers(headers)
    if kind == "mailgun":
        return verify_mailgun(str(config.get("webhook_signing_key") or ""), body, now=now)
    if kind == "sendgrid":
        verify_sendgrid(str(config.get("webhook_public_key") or ""), h, body, now=now)
    elif kind == "twilio":
        verify_twilio(str(config.get("auth_token") or ""), h, body, url=url)
    elif kind == "whatsapp":
        verify_whatsapp(str(config.get("app_secret") or ""), h, body)
    elif kind == "sandbox":
        verify_sandbox(webhook_key, h, body, now=now)
    else:
        raise InvalidSignature(f"{kind} connections do not receive webhooks")
    return None
