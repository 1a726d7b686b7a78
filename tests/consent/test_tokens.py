"""Unsubscribe tokens: signed, unforgeable, never expiring, valid across a key rotation."""

from __future__ import annotations

import time

import pytest

from server.consent import tokens
from tests.conftest import make_settings

OLD, NEW = "old-secret-" + "a" * 32, "new-secret-" + "b" * 32


def _token(secret: str = NEW, **over: object) -> str:
    fields: dict[str, object] = {"workspace_id": 3, "contact_id": 7, "channel": "email", "scope": "all"}
    fields.update(over)
    return tokens.sign(secret, **fields)  # type: ignore[arg-type]


def test_a_token_says_who_opts_out_of_what() -> None:
    asked = tokens.verify([NEW], _token(issued=1_700_000_000))
    assert asked == tokens.Unsubscribe(3, 7, "email", "all", 1_700_000_000)


def test_a_token_signed_years_ago_still_verifies() -> None:
    ten_years_ago = int(time.time()) - 10 * 365 * 86400
    assert tokens.verify([NEW], _token(issued=ten_years_ago)) is not None


def test_a_changed_payload_or_signature_is_refused() -> None:
    good = _token()
    payload, mac = good.split(".")
    other_contact = _token(contact_id=8).split(".")[0]
    assert tokens.verify([NEW], f"{other_contact}.{mac}") is None  # someone else's unsubscribe
    flipped = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")
    assert tokens.verify([NEW], f"{payload}.{flipped}") is None


def test_garbage_is_refused_without_raising() -> None:
    for junk in ["", ".", "abc", "a.b.c", "%%%.###", "x" * 5000, _token() + "x", "é.é"]:
        assert tokens.verify([NEW], junk) is None


def test_a_token_signed_with_another_key_is_refused() -> None:
    assert tokens.verify([NEW], _token(OLD)) is None


def test_after_rotation_the_previous_key_still_verifies_its_tokens() -> None:
    before = _token(OLD)
    settings = make_settings("sqlite+aiosqlite://", secret_key=NEW, previous_secret_keys=OLD)
    assert settings.previous_secret_keys == [OLD]
    assert tokens.verify(tokens.secrets_of(settings), before) is not None
    # ...until the old key leaves the list
    settings = make_settings("sqlite+aiosqlite://", secret_key=NEW)
    assert tokens.verify(tokens.secrets_of(settings), before) is None


def test_previous_keys_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_PREVIOUS_SECRET_KEYS", f"{OLD}, second-old-key ")
    settings = make_settings("sqlite+aiosqlite://", secret_key=NEW)
    assert settings.previous_secret_keys == [OLD, "second-old-key"]


def test_the_token_key_is_not_the_secret_key_itself() -> None:
    # A token's MAC is keyed by a key derived for this purpose, so it cannot double as a session
    # signature made with the secret key.
    import hashlib
    import hmac

    payload, mac = _token().split(".")
    raw = tokens._unb64(payload)
    assert tokens._b64(hmac.new(NEW.encode(), raw, hashlib.sha256).digest()) != mac
