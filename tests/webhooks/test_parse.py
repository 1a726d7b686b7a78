"""Provider payloads normalised into our event vocabulary."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from server.webhooks.parse import MalformedPayload, ProviderEvent, parse

from .payloads import (
    SG_X_MESSAGE_ID,
    mailgun_body,
    mailgun_event_data,
    sendgrid_batch,
    sendgrid_event,
    twilio_body,
    twilio_form,
    whatsapp_body,
    whatsapp_status,
)

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def summary(e: ProviderEvent) -> tuple[str, str | None, str | None]:
    return e.kind, e.status, e.suppress


# --- SendGrid ---------------------------------------------------------------------------------


def test_sendgrid_batch_maps_every_event_type() -> None:
    events = parse("sendgrid", json.dumps(sendgrid_batch()).encode(), now=NOW)
    assert [summary(e) for e in events] == [
        ("accepted", "sent", None),
        ("deferred", None, None),
        ("delivered", "delivered", None),
        ("opened", None, None),
        ("clicked", None, None),
        ("bounced", "bounced", "bounce"),
        ("bounced", "bounced", None),  # type=blocked: a soft bounce does not suppress
        ("dropped", "failed", "bounce"),  # dropped because SendGrid already suppresses it
        ("spam", None, "spam"),
        ("unsubscribed", None, "unsubscribe"),
        ("unsubscribed", None, "unsubscribe"),
    ]
    first = events[0]
    assert first.provider_event_id == "sg_event_id-processed-1"
    assert first.provider_message_id == SG_X_MESSAGE_ID  # the `.filter…` part is stripped
    assert first.recipient == "example@example.test"
    assert first.occurred_at == dt.datetime.fromtimestamp(1764000001, dt.UTC)
    assert first.raw["pool"] == {"name": "new_MY_test", "id": 210}
    assert events[5].reason == "500 unknown recipient"
    assert events[6].reason is not None and events[6].reason.startswith("blocked")


def test_sendgrid_custom_arg_gives_our_message_id() -> None:
    [event] = parse("sendgrid", json.dumps([sendgrid_event("delivered", 1, message_id=77)]).encode(), now=NOW)
    assert event.our_message_id == 77
    [event] = parse(
        "sendgrid", json.dumps([sendgrid_event("delivered", 1, sb_message_id="x")]).encode(), now=NOW
    )
    assert event.our_message_id is None


def test_sendgrid_dropped_for_other_reasons_does_not_suppress() -> None:
    body = json.dumps([sendgrid_event("dropped", 1, reason="Invalid SMTPAPI header")]).encode()
    [event] = parse("sendgrid", body, now=NOW)
    assert summary(event) == ("dropped", "failed", None)


def test_sendgrid_event_without_id_gets_a_stable_hash() -> None:
    item = sendgrid_event("open", 1)
    del item["sg_event_id"]
    a = parse("sendgrid", json.dumps([item]).encode(), now=NOW)[0]
    b = parse("sendgrid", json.dumps([item], indent=2).encode(), now=NOW)[0]
    assert a.provider_event_id == b.provider_event_id
    assert a.provider_event_id.startswith("h:")


def test_sendgrid_unknown_event_is_record_only() -> None:
    [event] = parse("sendgrid", json.dumps([sendgrid_event("account_status_change", 1)]).encode(), now=NOW)
    assert summary(event) == ("account_status_change", None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"event":"delivered"}',
        b"[1]",
        b'[{"email":"a@b.test"}]',
        json.dumps([sendgrid_event("delivered", 1, timestamp="yesterday")]).encode(),
    ],
)
def test_sendgrid_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parse("sendgrid", body, now=NOW)


# --- Mailgun ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (mailgun_event_data("accepted"), ("accepted", "sent", None)),
        (
            mailgun_event_data("delivered", **{"delivery-status": {"code": 250, "message": "OK"}}),
            ("delivered", "delivered", None),
        ),
        (
            mailgun_event_data(
                "failed",
                severity="permanent",
                reason="bounce",
                **{"delivery-status": {"code": 550, "description": "No such user"}},
            ),
            ("bounced", "bounced", "bounce"),
        ),
        (
            mailgun_event_data(
                "failed",
                severity="temporary",
                reason="generic",
                **{"delivery-status": {"code": 452, "message": "mailbox full"}},
            ),
            ("deferred", None, None),
        ),
        (
            mailgun_event_data("failed", severity="permanent", reason="suppress-unsubscribe"),
            ("failed", "failed", "unsubscribe"),
        ),
        (mailgun_event_data("failed", severity="permanent", reason="old"), ("failed", "failed", None)),
        (mailgun_event_data("opened"), ("opened", None, None)),
        (mailgun_event_data("clicked", url="https://example.test"), ("clicked", None, None)),
        (mailgun_event_data("unsubscribed"), ("unsubscribed", None, "unsubscribe")),
        (mailgun_event_data("complained"), ("spam", None, "spam")),
        (mailgun_event_data("list_member_uploaded"), ("list_member_uploaded", None, None)),
    ],
)
def test_mailgun_events(data: dict[str, object], expected: tuple[str, str | None, str | None]) -> None:
    [event] = parse("mailgun", mailgun_body(data), now=NOW)
    assert summary(event) == expected
    assert event.provider_event_id == data["id"]
    assert event.provider_message_id == "20260203192638.000be97f99f8cea1@sample.mailgun.test"
    assert event.recipient == "alice@example.test"
    assert event.occurred_at == dt.datetime.fromtimestamp(1764000000.372891, dt.UTC)


def test_mailgun_reason_and_user_variables() -> None:
    data = mailgun_event_data(
        "failed",
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {"code": 550, "description": "No such user"},
            "user-variables": {"sb_message_id": "12"},
        },
    )
    data["message"]["headers"]["message-id"] = "<20260203.abc@sample.mailgun.test>"
    [event] = parse("mailgun", mailgun_body(data), now=NOW)
    assert event.reason == "bounce: No such user"
    assert event.our_message_id == 12
    assert event.provider_message_id == "20260203.abc@sample.mailgun.test"  # brackets are not part of the id


def test_mailgun_empty_user_variables_list_is_fine() -> None:
    data = mailgun_event_data("delivered", **{"user-variables": []})
    [event] = parse("mailgun", mailgun_body(data), now=NOW)
    assert event.our_message_id is None


@pytest.mark.parametrize("body", [b"nope", b"[]", b'{"signature":{}}', b'{"event-data":{"id":"x"}}'])
def test_mailgun_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parse("mailgun", body, now=NOW)


# --- Twilio -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        ("queued", None, ("queued", "queued", None)),
        ("sending", None, ("sending", "sending", None)),
        ("sent", None, ("sent", "sent", None)),
        ("delivered", None, ("delivered", "delivered", None)),
        ("read", None, ("read", "delivered", None)),
        ("undelivered", "30003", ("undelivered", "failed", None)),  # handset off: may work later
        ("undelivered", "30005", ("undelivered", "failed", "bounce")),  # unknown handset
        ("failed", "21610", ("failed", "failed", "unsubscribe")),  # recipient replied STOP
        ("failed", "30007", ("failed", "failed", None)),  # carrier filtering
    ],
)
def test_twilio_statuses(
    status: str, error: str | None, expected: tuple[str, str | None, str | None]
) -> None:
    [event] = parse("twilio", twilio_body(twilio_form(status, error=error)), now=NOW)
    assert summary(event) == expected
    assert event.provider_message_id == "SM1342fe1b2c904d1ab04f0fc7a58abca9"
    assert event.recipient == "+15558675310"
    assert event.occurred_at == NOW
    assert event.raw["MessageStatus"] == status
    if error:
        assert event.reason == f"error {error}"


def test_a_twilio_whatsapp_callback_names_the_recipient_by_number() -> None:
    """WhatsApp through Twilio prefixes both numbers with `whatsapp:`; a suppression (a failed
    send to a number that cannot receive) must name the number the dispatcher checks."""
    form = {
        **twilio_form("failed", error="21211"),
        "To": "whatsapp:+15558675310",
        "From": "whatsapp:+15017122661",
    }
    [event] = parse("twilio", twilio_body(form), now=NOW)
    assert event.recipient == "+15558675310"
    assert event.suppress == "bounce"
    assert event.raw["To"] == "whatsapp:+15558675310"  # the provider's form is kept as it came


def test_twilio_event_id_is_a_hash_of_sid_status_and_error() -> None:
    def event_id(**kw: str | None) -> str:
        return parse("twilio", twilio_body(twilio_form(**kw)), now=NOW)[0].provider_event_id  # type: ignore[arg-type]

    assert event_id(status="sent") == event_id(status="sent")
    assert event_id(status="sent") != event_id(status="delivered")
    assert event_id(status="sent") != event_id(status="sent", sid="SM" + "0" * 32)
    assert event_id(status="failed", error="30007") != event_id(status="failed", error="30008")


@pytest.mark.parametrize("body", [b"", b"MessageStatus=sent", b"MessageSid=SM1", b"\xff=\xfe", b"just-text"])
def test_twilio_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parse("twilio", body, now=NOW)


# --- WhatsApp ---------------------------------------------------------------------------------


def test_whatsapp_statuses() -> None:
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
    body = whatsapp_body(
        whatsapp_status(wamid, "sent"),
        whatsapp_status(wamid, "delivered"),
        whatsapp_status(wamid, "read"),
        whatsapp_status(
            "wamid.other",
            "failed",
            errors=[
                {
                    "code": 131026,
                    "title": "Message undeliverable",
                    "message": "Message undeliverable",
                    "error_data": {"details": "Receiver is incapable of receiving this message"},
                }
            ],
        ),
    )
    events = parse("whatsapp", body, now=NOW)
    assert [summary(e) for e in events] == [
        ("sent", "sent", None),
        ("delivered", "delivered", None),
        ("read", "delivered", None),
        ("failed", "failed", None),
    ]
    assert events[0].provider_message_id == wamid
    assert events[0].recipient == "+16315551181"
    assert events[0].occurred_at == dt.datetime.fromtimestamp(1764000000, dt.UTC)
    assert len({e.provider_event_id for e in events}) == 4
    assert events[3].reason == "error 131026: Receiver is incapable of receiving this message"
    again = parse("whatsapp", body, now=NOW)
    assert [e.provider_event_id for e in again] == [e.provider_event_id for e in events]


def test_whatsapp_inbound_messages_are_not_status_events() -> None:
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {"messages": [{"from": "16315551181", "id": "ABGG", "type": "text"}]},
                        }
                    ],
                }
            ],
        }
    ).encode()
    assert parse("whatsapp", body, now=NOW) == []


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        b'{"entry":[{"changes":{}}]}',
        b'{"entry":[{"changes":[{"value":{"statuses":[{"id":"w"}]}}]}]}',
    ],
)
def test_whatsapp_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parse("whatsapp", body, now=NOW)


# --- sandbox ----------------------------------------------------------------------------------


def test_sandbox_events() -> None:
    body = json.dumps(
        {
            "events": [
                {
                    "id": "evt_1",
                    "message_id": "sbx_9",
                    "status": "delivered",
                    "timestamp": 1764000000,
                    "recipient": "bob@example.test",
                    "reason": None,
                },
                {
                    "id": "evt_2",
                    "message_id": "sbx_10",
                    "status": "bounced",
                    "timestamp": "2026-11-24T12:00:00Z",
                    "recipient": "carol@example.test",
                    "reason": "550 mailbox unavailable",
                },
                {
                    "id": "evt_3",
                    "message_id": "sbx_9",
                    "status": "opened",
                    "timestamp": 1764000001,
                    "recipient": "bob@example.test",
                },
            ]
        }
    ).encode()
    events = parse("sandbox", body, now=NOW)
    assert [summary(e) for e in events] == [
        ("delivered", "delivered", None),
        ("bounced", "bounced", "bounce"),
        ("opened", None, None),
    ]
    assert [e.provider_event_id for e in events] == ["evt_1", "evt_2", "evt_3"]
    assert events[1].provider_message_id == "sbx_10"
    assert events[1].occurred_at == NOW
    assert events[1].reason == "550 mailbox unavailable"


@pytest.mark.parametrize("body", [b"[]", b'{"events":{}}', b'{"events":[{"id":"e","status":"sent"}]}'])
def test_sandbox_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parse("sandbox", body, now=NOW)


def test_kinds_without_webhooks_are_refused() -> None:
    with pytest.raises(MalformedPayload):
        parse("smtp", b"{}", now=NOW)


def test_whatsapp_echoed_idempotency_key_gives_our_message_id() -> None:
    item = whatsapp_status("wamid.x", "delivered")
    item["biz_opaque_callback_data"] = "sb-3-42"
    [event] = parse("whatsapp", whatsapp_body(item), now=NOW)
    assert event.our_message_id == 42
    item["biz_opaque_callback_data"] = "campaign-7"
    [event] = parse("whatsapp", whatsapp_body(item), now=NOW)
    assert event.our_message_id is None


def test_nul_characters_are_replaced_for_storage() -> None:
    body = json.dumps([sendgrid_event("open", 1, useragent="bad\u0000agent")]).encode()
    assert b"\\u0000" in body
    [event] = parse("sendgrid", body, now=NOW)
    assert event.raw["useragent"] == "bad\ufffdagent"
    [event] = parse("twilio", twilio_body({**twilio_form("sent"), "Body": "a\x00b"}), now=NOW)
    assert event.raw["Body"] == "a\ufffdb"


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": [{"id": "a", "message_id": "m", "status": "sent", "reason": "x\\u0000y"}]}',
        b'{"events": [{"id": "a", "message_id": "m", "status": "sent", "reason": "\\ud800"}]}',
        b'{"events": [{"id": "a", "message_id": "m", "status": "sent", "reason": "\\uDC00z"}]}',
        b'{"events": [{"id": "a", "message_id": "m", "status": "sent", "\\u0000": 1}]}',  # a key
        # no escape in sight: a raw surrogate (json.loads reads bytes with surrogatepass) ...
        b'{"events": [{"id": "a", "message_id": "m", "status": "sent", "reason": "\xed\xa0\x80"}]}',
        # ... or UTF-16, whose escapes the ASCII pattern does not see
        '{"events": [{"id": "a", "message_id": "m", "status": "sent", "reason": "\\u0000"}]}'.encode(
            "utf-16"
        ),
        b'{"events": [{"id": "a", "message_id": "m", "status": "sent", "reason": "\\u00e9 \\ud83d\\ude00"}]}',
    ],
)
def test_a_json_body_never_hands_on_a_nul_or_a_lone_surrogate(body: bytes) -> None:
    """The cleaning walk is skipped only for bodies that cannot hold either (ASCII, no escape of
    one); whatever the body, what comes out is what the walk makes of what the parser reads."""
    from server.webhooks.parse import storable

    [event] = parse("sandbox", body, now=NOW)
    expected = storable(json.loads(body))["events"][0]
    assert event.raw == expected
    texts = [*event.raw, *(v for v in event.raw.values() if isinstance(v, str))]
    assert not any("\x00" in t or any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts), texts


def test_overlong_event_ids_are_hashed_to_fit_the_column() -> None:
    long_id = "x" * 500
    [event] = parse(
        "sendgrid", json.dumps([sendgrid_event("open", 1, sg_event_id=long_id)]).encode(), now=NOW
    )
    assert len(event.provider_event_id) <= 200
    [again] = parse(
        "sendgrid", json.dumps([sendgrid_event("open", 2, sg_event_id=long_id)]).encode(), now=NOW
    )
    assert again.provider_event_id == event.provider_event_id
