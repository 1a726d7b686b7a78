"""Local stand-ins for the providers' HTTP APIs.

Each fake checks a request the way the provider's documentation describes it (method, path,
auth, content type, required fields) and answers as the provider does: its success body and
headers, and its own error bodies. `mode` switches a fake into an outage for the error tests.
Each runs under uvicorn in a thread on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None


class LocalServer:
    """Serves an ASGI app with uvicorn in a daemon thread; `origin` is `http://127.0.0.1:<port>`."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.origin = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, lifespan="off", ws="none", log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("local server did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(5)
        self._sock.close()


def basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None
    return user, password


class FakeProvider:
    """A provider API: `route` is its documented path; subclasses answer `accept(request, seen)`."""

    route: ClassVar[str]
    retry_after: ClassVar[float | None] = 2.0  # what the 429 answer announces

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.issued: list[str] = []  # message ids handed out, in order
        self.mode = "ok"  # ok | rate_limited | server_error | slow
        self.app = Starlette(routes=[Route(self.route, self._handle, methods=["POST"])])

    def reset(self) -> None:
        self.requests.clear()
        self.issued.clear()
        self.mode = "ok"

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        seen = Seen(request.method, request.url.path, dict(request.headers), body)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            seen.form = {k: str(v) for k, v in (await request.form()).multi_items()}
        elif ctype.startswith("application/json"):
            try:
                seen.json = orjson.loads(body)
            except orjson.JSONDecodeError:
                seen.json = None
        self.requests.append(seen)
        if self.mode == "slow":
            await asyncio.sleep(0.5)
        elif self.mode == "rate_limited":
            return self.rate_limited()
        elif self.mode == "server_error":
            return self.server_error()
        return self.accept(request, seen)

    def accept(self, request: Request, seen: Seen) -> Response:
        raise NotImplementedError

    def rate_limited(self) -> Response:
        raise NotImplementedError

    def server_error(self) -> Response:
        raise NotImplementedError


class FakeSendGrid(FakeProvider):
    """v3 Mail Send: 202 with an empty body and `X-Message-Id`; errors `{"errors": [...]}`."""

    route = "/v3/mail/send"
    api_key = "SG.test-key"

    @staticmethod
    def errors(status: int, message: str, field_: str | None = None, **headers: str) -> Response:
        body = {"errors": [{"message": message, "field": field_, "help": None}]}
        return JSONResponse(body, status, headers=headers)

    def accept(self, request: Request, seen: Seen) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.errors(401, "The provided authorization grant is invalid, expired, or revoked")
        if not isinstance(seen.json, dict):
            return self.errors(400, "Bad Request", None)
        mail = seen.json
        personalizations = mail.get("personalizations")
        if not personalizations or not all(p.get("to") for p in personalizations):
            return self.errors(400, "The personalizations field is required.", "personalizations")
        for i, p in enumerate(personalizations):
            for j, to in enumerate(p["to"]):
                if not EMAIL.fullmatch(to.get("email", "")):
                    return self.errors(
                        400,
                        "Does not contain a valid address.",
                        f"personalizations.{i}.to.{j}.email",
                    )
        if not EMAIL.fullmatch((mail.get("from") or {}).get("email", "")):
            return self.errors(400, "The from email does not contain a valid address.", "from.email")
        if not mail.get("subject") and not all(p.get("subject") for p in personalizations):
            return self.errors(400, "The subject is required.", "subject")
        content = mail.get("content") or []
        if not content or any(not c.get("type") or "value" not in c for c in content):
            return self.errors(
                400, "The content value must be a string at least one character in length.", "content.0.value"
            )
        if any(not isinstance(v, str) for v in (mail.get("custom_args") or {}).values()):
            return self.errors(400, "Custom args values must be strings.", "custom_args")
        self.issued.append(secrets.token_urlsafe(16))
        return Response(status_code=202, headers={"X-Message-Id": self.issued[-1]})

    def rate_limited(self) -> Response:
        reset = str(int(time.time()) + 60)
        return self.errors(
            429,
            "too many requests",
            None,
            **{
                "Retry-After": "2",
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            },
        )

    def server_error(self) -> Response:
        return self.errors(500, "Internal Server Error")


class FakeMailgun(FakeProvider):
    """Messages API: 200 `{"id", "message"}`; errors `{"message"}`, a 401 is plain `Forbidden`."""

    route = "/v3/{domain}/messages"
    api_key = "key-test"
    domain = "mg.example.test"

    def accept(self, request: Request, seen: Seen) -> Response:
        if basic_auth(request) != ("api", self.api_key):
            return PlainTextResponse("Forbidden", 401)
        if request.path_params["domain"] != self.domain:
            return JSONResponse({"message": f"Domain not found: {request.path_params['domain']}"}, 404)
        if not seen.form:
            return JSONResponse({"message": "'from' parameter is missing"}, 400)
        for name in ("from", "to", "subject"):
            if not seen.form.get(name):
                return JSONResponse({"message": f"'{name}' parameter is missing"}, 400)
        if not (seen.form.get("text") or seen.form.get("html") or seen.form.get("template")):
            return JSONResponse(
                {"message": "Need at least one of 'text', 'html' or 'template' parameters specified"}, 400
            )
        if not EMAIL.fullmatch(seen.form["to"]):
            return JSONResponse(
                {"message": "to parameter is not a valid address. please check documentation"}, 400
            )
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}@{self.domain}>"
        self.issued.append(message_id)
        return JSONResponse({"id": message_id, "message": "Queued. Thank you."})

    def rate_limited(self) -> Response:
        return JSONResponse({"message": "Too many requests"}, 429, headers={"Retry-After": "2"})

    def server_error(self) -> Response:
        return JSONResponse({"message": "Internal Server Error"}, 500)


class FakeTwilio(FakeProvider):
    """Messages resource: 201 with the Message JSON; errors `{"code", "message", "more_info", "status"}`."""

    route = "/2010-04-01/Accounts/{sid}/Messages.json"
    account_sid = "AC" + "0123456789abcdef" * 2
    auth_token = "twilio-token"

    @staticmethod
    def error(status: int, code: int, message: str, **headers: str) -> Response:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return JSONResponse(body, status, headers=headers)

    def accept(self, request: Request, seen: Seen) -> Response:
        if (
            basic_auth(request) != (self.account_sid, self.auth_token)
            or request.path_params["sid"] != self.account_sid
        ):
            return self.error(401, 20003, "Authenticate")
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return self.error(400, 21602, "Message body is required.")
        form = seen.form
        if not form.get("To"):
            return self.error(400, 21604, "A 'To' phone number is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self.error(400, 21603, "A 'From' phone number is required.")
        # WhatsApp: both addresses `whatsapp:+E.164` (a Messaging Service picks its own sender).
        to_whatsapp = form["To"].startswith("whatsapp:")
        if "From" in form and form["From"].startswith("whatsapp:") != to_whatsapp:
            return self.error(
                400, 21910, "Invalid From and To pair. From and To should be of the same channel"
            )
        if "From" in form and not E164.fullmatch(form["From"].removeprefix("whatsapp:")):
            return self.error(400, 21212, f"Invalid From Number: {form['From']}")
        if "ContentSid" in form:
            # Content API: a template by its SID, its variables a JSON object {"1": "...", ...}.
            if not re.fullmatch(r"HX[0-9a-fA-F]{32}", form["ContentSid"]) or "Body" in form:
                return self.error(400, 21655, "The ContentSid is Invalid")
            if "ContentVariables" in form and not self._variables(form["ContentVariables"]):
                return self.error(400, 21656, "The ContentVariables Parameter is invalid")
        elif not form.get("Body"):
            return self.error(400, 21602, "Message body is required.")
        if not E164.fullmatch(form["To"].removeprefix("whatsapp:")):
            return self.error(400, 21211, f"Invalid 'To' Phone Number: {form['To']}")
        callback = form.get("StatusCallback", "")
        if callback and not callback.startswith(("http://", "https://")):
            return self.error(400, 21609, "Invalid StatusCallback url")
        sid = "SM" + secrets.token_hex(16)
        self.issued.append(sid)
        resource = {
            "account_sid": self.account_sid,
            "sid": sid,
            "to": form["To"],
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form.get("Body", ""),
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return JSONResponse(resource, 201)

    @staticmethod
    def _variables(raw: str) -> bool:
        """ContentVariables as the Content API takes them: a JSON object of string values."""
        try:
            variables = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        return isinstance(variables, dict) and all(isinstance(v, str) for v in variables.values())

    def rate_limited(self) -> Response:
        return self.error(429, 20429, "Too Many Requests", **{"Retry-After": "2"})

    def server_error(self) -> Response:
        return self.error(500, 20500, "Internal Server Error")


class FakeSlack(FakeProvider):
    """Incoming webhook: plain-text `ok`, or an error word with a 4xx/5xx."""

    route = "/services/T0001/B0001/{secret}"
    secret = "XXXXXXXXXXXXXXXXXXXXXXXX"

    def accept(self, request: Request, seen: Seen) -> Response:
        if request.path_params["secret"] != self.secret:
            return PlainTextResponse("no_service", 404)
        if not isinstance(seen.json, dict):
            return PlainTextResponse("invalid_payload", 400)
        if not (seen.json.get("text") or seen.json.get("blocks") or seen.json.get("attachments")):
            return PlainTextResponse("no_text", 400)
        return PlainTextResponse("ok")

    def rate_limited(self) -> Response:
        return PlainTextResponse("rate_limited", 429, headers={"Retry-After": "2"})

    def server_error(self) -> Response:
        return PlainTextResponse("rollup_error", 500)


@dataclass(frozen=True)
class Approved:
    """An approved WhatsApp template as Meta holds it: what a send must fill in."""

    body: int = 0  # body parameters {{1}}, {{2}}, ...
    header: str | None = (
        None  # a header with a parameter: "text" (its one {{1}}), "image", "document", "video"
    )
    buttons: dict[int, str] = field(default_factory=dict)  # index -> sub_type, for buttons that take one


@dataclass(frozen=True)
class SentTemplate:
    """A template message accepted, as Meta read it."""

    name: str
    language: str
    body: list[str]
    header: tuple[str, str] | None = None  # (type, text or media link)
    buttons: tuple[tuple[str, int, str], ...] = ()  # (sub_type, index, payload or URL suffix)


_TEMPLATE_PARAMETER_INVALID = (400, 131009, "(#131009) Parameter value is not valid")
_MEDIA = ("image", "document", "video")
_BUTTON_PARAMETER = {"quick_reply": "payload", "url": "text"}


class FakeWhatsApp(FakeProvider):
    """Cloud API `/{version}/{phone_number_id}/messages`: 200 with `messages[0].id`; Graph errors."""

    route = "/v21.0/{phone_number_id}/messages"
    retry_after = None  # Meta announces no delay: its rate limits are HTTP 400 with code 130429
    access_token = "EAAG-test-token"
    phone_number_id = "106540352242922"
    # Approved templates: name -> language -> what a send fills in.
    templates: ClassVar[dict[str, dict[str, Approved]]] = {
        "order_update": {"en_US": Approved(body=2), "de": Approved(body=2)},
        "hello_world": {"en_US": Approved()},
        # An image header, one body parameter, a "Track" URL button with a dynamic suffix.
        "shipping_update": {"en_US": Approved(body=1, header="image", buttons={0: "url"})},
        # A text header "Reminder for {{1}}", "Confirm"/"Cancel" quick replies with payloads.
        "appointment_reminder": {
            "en": Approved(body=1, header="text", buttons={0: "quick_reply", 1: "quick_reply"})
        },
        # A PDF header; button 0 is a static phone number, button 1 a URL with a suffix.
        "invoice_ready": {"en_US": Approved(header="document", buttons={1: "url"})},
    }
    allowed_recipients: ClassVar[frozenset[str]] = frozenset({"+15551234567", "15551234567"})

    def __init__(self) -> None:
        super().__init__()
        self.sent_templates: list[SentTemplate] = []

    def reset(self) -> None:
        super().reset()
        self.sent_templates.clear()

    @staticmethod
    def error(
        status: int, code: int, message: str, type_: str = "OAuthException", details: str | None = None
    ) -> Response:
        error: dict[str, Any] = {
            "message": message,
            "type": type_,
            "code": code,
            "fbtrace_id": "A" + secrets.token_hex(10),
        }
        if details:
            error["error_data"] = {"messaging_product": "whatsapp", "details": details}
        return JSONResponse({"error": error}, status)

    def accept(self, request: Request, seen: Seen) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return self.error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if request.path_params["phone_number_id"] != self.phone_number_id:
            return self.error(400, 100, "Unsupported post request.", "GraphMethodException")
        msg = seen.json
        if not isinstance(msg, dict) or msg.get("messaging_product") != "whatsapp":
            return self.error(400, 100, "(#100) The parameter messaging_product is required.")
        if not msg.get("to"):
            return self.error(400, 100, "(#100) The parameter to is required.")
        accepted: SentTemplate | None = None
        if msg.get("type") == "text":
            if not (msg.get("text") or {}).get("body"):
                return self.error(400, 100, "(#100) The parameter text['body'] is required.")
        elif msg.get("type") == "template":
            read = self.read_template(msg.get("template") or {})
            if isinstance(read, Response):
                return read
            accepted = read
        else:
            return self.error(400, 100, "(#100) Param type must be one of {TEXT, TEMPLATE, ...}")
        if msg["to"] not in self.allowed_recipients:
            return self.error(
                400,
                131030,
                "(#131030) Recipient phone number not in allowed list",
                details="Add recipient phone number to recipient list and try again.",
            )
        wamid = "wamid." + base64.b64encode(secrets.token_bytes(24)).decode()
        self.issued.append(wamid)
        message: dict[str, str] = {"id": wamid}
        if accepted is not None:
            message["message_status"] = "accepted"
            self.sent_templates.append(accepted)
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": msg["to"], "wa_id": msg["to"].lstrip("+")}],
                "messages": [message],
            }
        )

    @staticmethod
    def _text(parameter: Any, key: str = "text") -> str | None:
        """A text parameter's value, when it is one Meta takes: a non-empty single line."""
        text = parameter.get(key) if isinstance(parameter, dict) else None
        if not isinstance(text, str) or not text or "\n" in text or "\t" in text or "     " in text:
            return None
        return text

    def read_template(self, template: dict[str, Any]) -> SentTemplate | Response:
        """The `template` object as the Cloud API documents it (`name`, `language.code`,
        `components` of type `header`, `body`, `button` with `sub_type` and a string `index`),
        checked against the approved template it names."""
        if not template.get("name") or not (template.get("language") or {}).get("code"):
            return self.error(400, 131008, "(#131008) Required parameter is missing")
        invalid = self.error(*_TEMPLATE_PARAMETER_INVALID)
        body: list[str] | None = None
        header: tuple[str, str] | None = None
        buttons: dict[int, tuple[str, str]] = {}
        for component in template.get("components", []):
            kind = component.get("type")
            parameters = component.get("parameters")
            if not isinstance(parameters, list):
                return invalid
            if kind == "body" and body is None:
                body = []
                for parameter in parameters:
                    text = self._text(parameter)
                    if parameter.get("type") != "text" or text is None:
                        return self.error(
                            400,
                            132018,
                            "(#132018) There was an issue with the parameters in your template.",
                            details="Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
                        )
                    body.append(text)
            elif kind == "header" and header is None and len(parameters) == 1:
                (parameter,) = parameters
                ptype = parameter.get("type")
                if ptype == "text" and (text := self._text(parameter)) is not None:
                    header = ("text", text)
                elif ptype in _MEDIA and isinstance(media := parameter.get(ptype), dict):
                    # Exactly one of `link` (Meta fetches it) and `id` (an uploaded media: digits);
                    # a `filename` for a document only.
                    link, media_id = media.get("link"), media.get("id")
                    allowed = {"link", "id", "caption"} | ({"filename"} if ptype == "document" else set())
                    if set(media) - allowed or (link is None) == (media_id is None):
                        return invalid
                    if "filename" in media and not self._text(media, "filename"):
                        return invalid
                    if link is not None and not (
                        isinstance(link, str) and re.fullmatch(r"https?://\S+", link)
                    ):
                        return self.error(400, 131053, "(#131053) Media upload error", details="invalid link")
                    if media_id is not None and not (isinstance(media_id, str) and media_id.isdigit()):
                        return self.error(400, 131053, "(#131053) Media upload error", details="invalid id")
                    header = (ptype, link if link is not None else f"id:{media_id}")
                    if "filename" in media:
                        header = (ptype, f"{header[1]} as {media['filename']}")
                else:
                    return invalid
            elif kind == "button" and len(parameters) == 1:
                sub_type, index = component.get("sub_type"), component.get("index")
                key = _BUTTON_PARAMETER.get(sub_type) if isinstance(sub_type, str) else None
                # Meta documents the index as a string, "0" to "9".
                if key is None or not isinstance(index, str) or not re.fullmatch(r"[0-9]", index):
                    return invalid
                (parameter,) = parameters
                value = self._text(parameter, key)
                if parameter.get("type") != key or value is None or int(index) in buttons:
                    return invalid
                buttons[int(index)] = (sub_type, value)
            else:
                return invalid
        name, language = template["name"], template["language"]["code"]
        approved = self.templates.get(name, {}).get(language)
        if approved is None:
            return self.error(
                404,
                132001,
                "(#132001) Template name does not exist in the translation",
                details=f"template name ({name}) does not exist in {language}",
            )
        body = body or []
        if len(body) != approved.body:
            return self.error(
                400,
                132000,
                "(#132000) Number of parameters does not match the expected number of params",
                details=f"body: number of localizable_params ({len(body)}) does not match"
                f" the expected number of params ({approved.body})",
            )
        if (header is None) != (approved.header is None) or set(buttons) != set(approved.buttons):
            return self.error(
                400,
                132000,
                "(#132000) Number of parameters does not match the expected number of params",
                details="header or button parameters do not match the template's",
            )
        if (header and header[0] != approved.header) or any(
            sub_type != approved.buttons[i] for i, (sub_type, _) in buttons.items()
        ):
            return self.error(
                400, 132012, "(#132012) Parameter format does not match format in the created template"
            )
        return SentTemplate(
            name, language, body, header, tuple((t, i, v) for i, (t, v) in sorted(buttons.items()))
        )

    def rate_limited(self) -> Response:
        return self.error(
            400, 130429, "(#130429) Rate limit hit", details="Cloud API message throughput has been reached."
        )

    def server_error(self) -> Response:
        return self.error(500, 2, "An unexpected error has occurred. Please retry your request later.")


class Recorder:
    """A plain endpoint that records what it receives: the sandbox's webhook target and sink."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.status = 200
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def reset(self) -> None:
        self.requests.clear()
        self.status = 200

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(
            Seen(request.method, request.url.path, dict(request.headers), body, json=orjson.loads(body))
        )
        if self.status >= 400:
            return JSONResponse({"detail": "sink is down"}, self.status)
        return JSONResponse({"ok": True}, self.status)

    async def wait_for(self, count: int, *, path: str | None = None) -> list[Seen]:
        """The requests to `path` once there are `count` of them, or what came within 3 s."""
        deadline = time.monotonic() + 3.0
        while True:
            found = [r for r in self.requests if path is None or r.path == path]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.01)
