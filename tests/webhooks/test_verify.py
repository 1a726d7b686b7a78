"""Signature checks, against the providers' own reference code and documented examples."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qsl, urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from server import signing
from server.webhooks.verify import (
    InvalidSignature,
    twilio_signature,
    verify_mailgun,
    verify_request,
    verify_sandbox,
    verify_sendgrid,
    verify_twilio,
    verify_whatsapp,
)

NOW = 1_764_000_000.0


# --- SendGrid ---------------------------------------------------------------------------------

# The vector SendGrid publishes with its helper libraries (sendgrid-python/-nodejs/-java tests).
SG_DOC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTn"
    "lvFYPAZFceEu/1FwCM/QmGUhA=="
)
SG_DOC_OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDth"
    "vj+y7GjUuFDb/R1NGe1OPzpA=="
)
SG_DOC_SIGNATURE = (
    "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
)
SG_DOC_TIMESTAMP = "1588788367"
SG_DOC_PAYLOAD = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'


def sg_headers(signature: str, timestamp: str) -> dict[str, str]:
    return {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


class SendGridKey:
    """A P-256 key pair standing in for SendGrid's; signs as SendGrid does."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_b64 = base64.b64encode(der).decode()  # as the SendGrid console shows it
        self.public_pem = (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def sign(self, timestamp: str, body: bytes) -> str:
        sig = self.private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(sig).decode()


def _sendgrid_ok(key: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    try:
        verify_request(
            "sendgrid",
            config={"webhook_public_key": key},
            webhook_key="",
            headers=headers,
            body=body,
            url="http://x/webhooks/1",
            now=now,
        )
    except InvalidSignature:
        return False
    return True


def test_sendgrid_documented_vector_verifies_and_forgeries_do_not() -> None:
    now = float(SG_DOC_TIMESTAMP) + 10
    assert _sendgrid_ok(SG_DOC_KEY, sg_headers(SG_DOC_SIGNATURE, SG_DOC_TIMESTAMP), SG_DOC_PAYLOAD, now)
    # another key, another payload, another timestamp: each breaks it
    assert not _sendgrid_ok(
        SG_DOC_OTHER_KEY, sg_headers(SG_DOC_SIGNATURE, SG_DOC_TIMESTAMP), SG_DOC_PAYLOAD, now
    )
    assert not _sendgrid_ok(SG_DOC_KEY, sg_headers(SG_DOC_SIGNATURE, SG_DOC_TIMESTAMP), b"payload", now)
    assert not _sendgrid_ok(SG_DOC_KEY, sg_headers(SG_DOC_SIGNATURE, "1588788368"), SG_DOC_PAYLOAD, now + 1)


def test_sendgrid_agrees_with_the_sendgrid_helper_on_valid_and_forged() -> None:
    key = SendGridKey()
    helper = EventWebhook(key.public_b64)
    body = json.dumps([{"email": "a@example.test", "event": "delivered", "sg_event_id": "e1"}]).encode()
    ts = str(int(NOW))
    good = key.sign(ts, body)
    forged_by_other_key = SendGridKey().sign(ts, body)
    cases = [
        (body, good, ts),  # valid
        (body, forged_by_other_key, ts),  # signed by someone else
        (body + b" ", good, ts),  # body changed
        (body, good, str(int(NOW) - 1)),  # timestamp changed
        (body, key.sign(ts, body.replace(b"delivered", b"bounce")), ts),  # signature of another body
    ]
    results = []
    for b, sig, t in cases:
        ours = _sendgrid_ok(key.public_b64, sg_headers(sig, t), b, NOW)
        theirs = helper.verify_signature(b.decode(), sig, t)
        assert ours == theirs, (b, sig, t)
        results.append(ours)
    assert results == [True, False, False, False, False]


def test_sendgrid_accepts_the_key_as_pem_too() -> None:
    key = SendGridKey()
    ts, body = str(int(NOW)), b"[]"
    assert _sendgrid_ok(key.public_pem, sg_headers(key.sign(ts, body), ts), body, NOW)


def test_sendgrid_missing_stale_and_garbled_are_refused() -> None:
    key = SendGridKey()
    body = b"[]"
    fresh = str(int(NOW))
    stale = str(int(NOW) - 301)
    future = str(int(NOW) + 301)
    assert not _sendgrid_ok(key.public_b64, {}, body, NOW)
    assert not _sendgrid_ok(
        key.public_b64, {"X-Twilio-Email-Event-Webhook-Signature": key.sign(fresh, body)}, body, NOW
    )
    assert not _sendgrid_ok(key.public_b64, sg_headers(key.sign(stale, body), stale), body, NOW)
    assert not _sendgrid_ok(key.public_b64, sg_headers(key.sign(future, body), future), body, NOW)
    assert not _sendgrid_ok(key.public_b64, sg_headers("not base64 !!", fresh), body, NOW)
    assert not _sendgrid_ok(key.public_b64, sg_headers(key.sign(fresh, body), "soon"), body, NOW)
    assert not _sendgrid_ok("", sg_headers(key.sign(fresh, body), fresh), body, NOW)
    assert not _sendgrid_ok("bm90IGEga2V5", sg_headers(key.sign(fresh, body), fresh), body, NOW)
    # inside the window, on both sides
    edge = str(int(NOW) - 300)
    assert _sendgrid_ok(key.public_b64, sg_headers(key.sign(edge, body), edge), body, NOW)


def test_sendgrid_reason_is_given() -> None:
    key = SendGridKey()
    stale = str(int(NOW) - 1000)
    headers = {k.lower(): v for k, v in sg_headers(key.sign(stale, b"[]"), stale).items()}
    with pytest.raises(InvalidSignature, match="5-minute"):
        verify_sendgrid(key.public_b64, headers, b"[]", now=NOW)


# --- Mailgun ----------------------------------------------------------------------------------

MG_KEY = "key-7e55d003b0e8ae7a6d3c8f1e4e0f3bb6"


def mailgun_body(
    key: str,
    timestamp: str,
    token: str = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123",
    signature: str | None = None,
) -> bytes:
    # The docs' recipe, written out independently: hex HMAC-SHA256(key, timestamp + token).
    sig = signature or hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": sig},
            "event-data": {"event": "delivered", "id": "MXcc2gEpS-eN8HfkOnmK2w"},
        }
    ).encode()


def _mailgun_ok(body: bytes, key: str = MG_KEY, now: float = NOW) -> bool:
    try:
        verify_mailgun(key, body, now=now)
    except InvalidSignature:
        return False
    return True


def test_mailgun_valid_forged_missing_stale() -> None:
    ts = str(int(NOW))
    assert _mailgun_ok(mailgun_body(MG_KEY, ts))
    assert not _mailgun_ok(mailgun_body("key-someone-else", ts))
    assert not _mailgun_ok(mailgun_body(MG_KEY, ts), key="key-someone-else")
    assert not _mailgun_ok(mailgun_body(MG_KEY, ts, signature="0" * 64))
    assert not _mailgun_ok(json.dumps({"event-data": {"event": "delivered"}}).encode())
    assert not _mailgun_ok(b"not json")
    assert not _mailgun_ok(b"[1, 2]")
    stale = str(int(NOW) - 301)
    assert not _mailgun_ok(mailgun_body(MG_KEY, stale))
    assert not _mailgun_ok(mailgun_body(MG_KEY, ts), key="")


def test_mailgun_token_and_timestamp_are_both_signed() -> None:
    ts = str(int(NOW))
    good = json.loads(mailgun_body(MG_KEY, ts))
    good["signature"]["token"] = "another-token-" + "x" * 36
    assert not _mailgun_ok(json.dumps(good).encode())
    good = json.loads(mailgun_body(MG_KEY, ts))
    good["signature"]["timestamp"] = str(int(NOW) + 1)
    assert not _mailgun_ok(json.dumps(good).encode())


# --- Twilio -----------------------------------------------------------------------------------

# The worked example of Twilio's "Webhooks security" page.
TW_DOC_TOKEN = "12345"
TW_DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TW_DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
TW_DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def _twilio_ok(token: str, url: str, body: bytes, signature: str | None) -> bool:
    headers = {"x-twilio-signature": signature} if signature is not None else {}
    try:
        verify_twilio(token, headers, body, url=url)
    except InvalidSignature:
        return False
    return True


def test_twilio_documented_example() -> None:
    assert twilio_signature(TW_DOC_TOKEN, TW_DOC_URL, TW_DOC_PARAMS.items()) == TW_DOC_SIGNATURE
    body = urlencode(TW_DOC_PARAMS).encode()
    assert _twilio_ok(TW_DOC_TOKEN, TW_DOC_URL, body, TW_DOC_SIGNATURE)
    assert not _twilio_ok("54321", TW_DOC_URL, body, TW_DOC_SIGNATURE)
    assert not _twilio_ok(TW_DOC_TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=3", body, TW_DOC_SIGNATURE)
    assert not _twilio_ok(TW_DOC_TOKEN, TW_DOC_URL, body.replace(b"1234", b"9999"), TW_DOC_SIGNATURE)


def test_twilio_agrees_with_the_twilio_request_validator() -> None:
    token = "9a1f0b2c3d4e5f60718293a4b5c6d7e8"
    url = "https://crm.example.test/webhooks/42"
    params = {
        "MessageSid": "SM1342fe1b2c904d1ab04f0fc7a58abca9",
        "MessageStatus": "delivered",
        "AccountSid": "AC00000000000000000000000000000000",
        "From": "+15017122661",
        "To": "+15558675310",
        "ApiVersion": "2010-04-01",
        "SmsStatus": "delivered",
        "Body": "héllo & good+bye = ok",
        "ErrorCode": "",
    }
    validator = RequestValidator(token)
    good = validator.compute_signature(url, params)
    body = urlencode(params).encode()
    forged = RequestValidator("someone-else").compute_signature(url, params)
    cases = [
        (url, body, good),
        (url, body, forged),
        (url + "?x=1", body, good),
        (url, urlencode({**params, "MessageStatus": "failed"}).encode(), good),
        (url.replace("https://crm.example.test", "https://crm.example.test:443"), body, good),  # port variant
    ]
    for u, b, sig in cases:
        theirs = validator.validate(u, dict(parse_qsl(b.decode(), keep_blank_values=True)), sig)
        assert _twilio_ok(token, u, b, sig) == theirs, (u, sig)
    assert [_twilio_ok(token, u, b, s) for u, b, s in cases] == [True, False, False, False, True]


def test_twilio_missing_or_empty_signature_is_refused() -> None:
    body = urlencode(TW_DOC_PARAMS).encode()
    assert not _twilio_ok(TW_DOC_TOKEN, TW_DOC_URL, body, None)
    assert not _twilio_ok(TW_DOC_TOKEN, TW_DOC_URL, body, "")
    assert not _twilio_ok("", TW_DOC_URL, body, TW_DOC_SIGNATURE)
    assert not _twilio_ok(TW_DOC_TOKEN, TW_DOC_URL, b"\xff\xfe", TW_DOC_SIGNATURE)


# --- WhatsApp ---------------------------------------------------------------------------------

WA_SECRET = "3f1c0e7ab2d94c6f8e5a7b9c0d1e2f3a"


def _whatsapp_ok(secret: str, body: bytes, header: str | None) -> bool:
    headers = {"x-hub-signature-256": header} if header is not None else {}
    try:
        verify_whatsapp(secret, headers, body)
    except InvalidSignature:
        return False
    return True


def test_whatsapp_valid_forged_missing() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    good = "sha256=" + hmac.new(WA_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert _whatsapp_ok(WA_SECRET, body, good)
    assert _whatsapp_ok(
        WA_SECRET, body, good.upper().replace("SHA256=", "sha256=")
    )  # hex case does not matter
    assert not _whatsapp_ok("other-secret", body, good)
    assert not _whatsapp_ok(WA_SECRET, body + b" ", good)
    assert not _whatsapp_ok(WA_SECRET, body, good.replace("sha256=", "sha1="))
    assert not _whatsapp_ok(WA_SECRET, body, good.removeprefix("sha256="))
    assert not _whatsapp_ok(WA_SECRET, body, None)
    assert not _whatsapp_ok(WA_SECRET, body, "")
    assert not _whatsapp_ok("", body, "sha256=" + hmac.new(b"", body, hashlib.sha256).hexdigest())


# --- sandbox ----------------------------------------------------------------------------------


def test_sandbox_uses_our_signature_with_its_window() -> None:
    key = "whk_sandbox_test_key"
    body = b'{"events":[]}'
    fresh = signing.sign(key, body, timestamp=int(NOW))
    verify_sandbox(key, {"x-sandbox-signature": fresh}, body, now=NOW)
    for headers, b in [
        ({"x-sandbox-signature": fresh}, b'{"events":[{}]}'),
        ({"x-sandbox-signature": signing.sign("other", body, timestamp=int(NOW))}, body),
        ({"x-sandbox-signature": signing.sign(key, body, timestamp=int(NOW) - 301)}, body),
        ({}, body),
    ]:
        with pytest.raises(InvalidSignature):
            verify_sandbox(key, headers, b, now=NOW)


def test_verify_request_reads_headers_in_any_case_and_refuses_other_kinds() -> None:
    key = "k"
    body = b"{}"
    header = signing.sign(key, body, timestamp=int(time.time()))
    verify_request(
        "sandbox",
        config={},
        webhook_key=key,
        headers={"X-Sandbox-Signature": header},
        body=body,
        url="http://x",
        now=time.time(),
    )
    for kind in ("smtp", "slack", "nope"):
        with pytest.raises(InvalidSignature):
            verify_request(
                kind,
                config={},
                webhook_key=key,
                headers={"X-Sandbox-Signature": header},
                body=body,
                url="http://x",
                now=time.time(),
            )
