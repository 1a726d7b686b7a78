"""Provider payloads shaped as the providers' documentation shows them, with our ids filled in."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

SG_X_MESSAGE_ID = "14c5d75ce93"  # the X-Message-Id header of the send


def sendgrid_event(event: str, n: int, *, message_id: int | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "email": "example@example.test",
        "timestamp": 1764000000 + n,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": ["cat facts"],
        "sg_event_id": f"sg_event_id-{event}-{n}",
        "sg_message_id": f"{SG_X_MESSAGE_ID}.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    if message_id is not None:
        item["sb_message_id"] = str(message_id)  # custom args arrive as strings
    item.update(extra)
    return item


def sendgrid_batch() -> list[dict[str, Any]]:
    """Every event type from SendGrid's Event Webhook reference, in one batch."""
    return [
        sendgrid_event("processed", 1, pool={"name": "new_MY_test", "id": 210}),
        sendgrid_event("deferred", 2, response="400 try again later", attempt="5"),
        sendgrid_event("delivered", 3, response="250 OK"),
        sendgrid_event("open", 4, useragent="Mozilla/4.0", ip="255.255.255.255"),
        sendgrid_event(
            "click", 5, useragent="Mozilla/4.0", ip="255.255.255.255", url="http://www.sendgrid.com/"
        ),
        sendgrid_event("bounce", 6, reason="500 unknown recipient", status="5.0.0", type="bounce"),
        sendgrid_event("bounce", 7, reason="550 5.7.1 blocked by policy", status="5.7.1", type="blocked"),
        sendgrid_event("dropped", 8, reason="Bounced Address", status="5.0.0"),
        sendgrid_event("spamreport", 9),
        sendgrid_event("unsubscribe", 10),
        sendgrid_event("group_unsubscribe", 11, asm_group_id=10, useragent="Mozilla/4.0"),
    ]


def mailgun_event_data(event: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": event,
        "id": f"mg-{event}-{extra.pop('n', 1)}",
        "timestamp": 1764000000.372891,
        "log-level": "info",
        "recipient": "alice@example.test",
        "recipient-domain": "example.test",
        "message": {
            "headers": {
                "to": "alice@example.test",
                "message-id": "20260203192638.000be97f99f8cea1@sample.mailgun.test",
                "from": "Support <support@sample.mailgun.test>",
                "subject": "Hello",
            },
            "size": 341,
        },
        "tags": [],
        "user-variables": {},
    }
    data.update(extra)
    return data


def mailgun_body(data: dict[str, Any], signature: dict[str, str] | None = None) -> bytes:
    return json.dumps(
        {"signature": signature or {"timestamp": "0", "token": "t", "signature": "s"}, "event-data": data}
    ).encode()


def twilio_form(
    status: str,
    *,
    sid: str = "SM1342fe1b2c904d1ab04f0fc7a58abca9",
    error: str | None = None,
    to: str = "+15558675310",
) -> dict[str, str]:
    form = {
        "AccountSid": "AC00000000000000000000000000000000",
        "ApiVersion": "2010-04-01",
        "From": "+15017122661",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": to,
    }
    if error is not None:
        form["ErrorCode"] = error
    return form


def twilio_body(form: dict[str, str]) -> bytes:
    return urlencode(form).encode()


def whatsapp_status(
    wamid: str,
    status: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    timestamp: str = "1764000000",
    recipient: str = "16315551181",
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": timestamp, "recipient_id": recipient}
    if status in ("sent", "delivered"):
        item["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "utility"}
    if errors:
        item["errors"] = errors
    return item


def whatsapp_body(*statuses: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": "106540352242922",
                                },
                                "statuses": list(statuses),
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
