"""Plain SMTP through aiosmtplib, one connection per message.

Idempotency: SMTP has none, but every attempt of a message carries the same `Message-ID`
(derived from our idempotency key), so receiving systems that deduplicate on it show one copy,
and bounces quoting it can be traced back. A 5xx reply is permanent, a 4xx reply or a lost
connection transient.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any, ClassVar

import aiosmtplib

from server.endpoints.guard import NotPublic, connect_public
from server.providers.adapters.base import (
    Adapter,
    OutgoingMessage,
    PermanentError,
    SendError,
    SendResult,
    TransientError,
    reply_headers,
    sender_for,
)
from server.providers.adapters.fields import Fields

HOST = r"[A-Za-z0-9._:\[\]-]{1,253}"
SAFE_ID = re.compile(r"(?=.{1,200}$)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")  # a dot-atom, usable as is


class SmtpAdapter(Adapter):
    kind: ClassVar[str] = "smtp"
    channels: ClassVar[frozenset[str]] = frozenset({"email"})
    required_keys: ClassVar[frozenset[str]] = frozenset({"host", "from_email"})
    secret_keys: ClassVar[frozenset[str]] = frozenset({"password"})
    endpoint_keys: ClassVar[frozenset[str]] = frozenset({"host"})
    location_keys: ClassVar[frozenset[str]] = frozenset({"host", "port"})
    # Whole-conversation budget per SMTP command; servers that greylist answer well within it.
    timeout_s: float = 30.0

    @classmethod
    def check_config(cls, fields: Fields) -> None:
        fields.string("host", required=True, pattern=HOST, hint="must be a host name or IP address")
        fields.integer("port", default=587, minimum=1, maximum=65535)
        fields.string("username")
        fields.string("password")
        fields.boolean("starttls", default=True)
        fields.email("from_email", required=True)
        fields.string(
            "inbound_domain", pattern=HOST, hint="must be a domain name"
        )  # Reply-To (conversations)

    async def send(self, msg: OutgoingMessage) -> SendResult:
        cfg = self.config
        message_id = message_id_for(msg.idempotency_key, cfg["from_email"])
        sender = sender_for(cfg, msg)
        email = EmailMessage()
        email["From"] = formataddr((msg.from_name, sender)) if msg.from_name else sender
        email["To"] = msg.to
        email["Subject"] = msg.subject
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = message_id
        if reply_to := reply_headers(cfg, msg).get("Reply-To"):
            email["Reply-To"] = reply_to
        email.set_content(msg.body)
        host = cfg["host"].strip("[]")
        try:
            # Guarded: connect to a checked address ourselves; `hostname` still names the server for
            # STARTTLS certificate checks.
            where: dict[str, Any] = (
                {"hostname": host, "port": cfg["port"]}
                if self.allow_private
                else {
                    "hostname": host,
                    "sock": await asyncio.wait_for(connect_public(host, cfg["port"]), self.timeout_s),
                }
            )
            await aiosmtplib.send(
                email,
                **where,
                username=cfg.get("username"),
                password=cfg.get("password"),
                start_tls=cfg["starttls"],
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            raise by_reply_code(refused.code, f"recipient refused: {refused.code} {refused.message}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise by_reply_code(exc.code, f"{exc.code} {exc.message}") from exc
        except NotPublic as exc:
            raise PermanentError(f"cannot connect to {cfg['host']}: {exc}") from exc
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise TransientError(f"timed out talking to {cfg['host']}:{cfg['port']}") from exc
        except OSError as exc:  # connect errors and disconnects (aiosmtplib's are OSErrors too)
            raise TransientError(f"cannot reach {cfg['host']}:{cfg['port']}: {exc}") from exc
        except aiosmtplib.SMTPException as exc:  # e.g. STARTTLS or AUTH not offered: a config problem
            raise PermanentError(str(exc)) from exc
        return SendResult(message_id)


def by_reply_code(code: int, reason: str) -> SendError:
    if 500 <= code < 600:
        return PermanentError(reason, code=str(code))
    return TransientError(reason, code=str(code))


def message_id_for(idempotency_key: str, from_email: str) -> str:
    """The same `Message-ID` for every attempt of one message."""
    local = (
        idempotency_key
        if SAFE_ID.fullmatch(idempotency_key)
        else hashlib.sha256(idempotency_key.encode()).hexdigest()
    )
    return f"<{local}@{from_email.rpartition('@')[2]}>"
