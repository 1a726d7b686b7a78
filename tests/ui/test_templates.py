"""The template editor's WhatsApp fields: the approved template's name, language and parameters,
shown for the whatsapp channel, named as the API's `whatsapp` object (static/forms.js nests dotted
names), and the API's validation errors for what the form sends."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx

from tests.ui.conftest import BrowserFactory

SCRIPT = "<script>alert('x')</script>"
META = {
    "name": "shipping_update",
    "language": "en_US",
    "parameters": ["{{ name }}", SCRIPT],
    "header": {"type": "image", "parameter": "https://cdn.example.test/{{ attributes.photo }}"},
    "buttons": [
        {"sub_type": "url", "index": 0, "parameter": "track/{{ attributes.order }}"},
        {"sub_type": "quick_reply", "index": 2, "parameter": "stop"},
    ],
}


class _Form(HTMLParser):
    """The fields of the page's first API form, as a browser holds them: (name, value, data-type),
    with whether each is disabled (itself or its fieldset), and the fieldsets' own attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # inside the form while > 0
        self.done = False
        self.fields: list[dict[str, Any]] = []
        self.fieldsets: list[dict[str, str | None]] = []
        self._open: list[dict[str, str | None]] = []  # fieldsets open around the current tag
        self._select: dict[str, Any] | None = None
        self._textarea: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and not self.done and "data-api-method" in a:
            self.depth = 1
            return
        if not self.depth:
            return
        disabled = "disabled" in a or any("disabled" in f for f in self._open)
        if tag == "fieldset":
            self._open.append(a)
            self.fieldsets.append(a)
        elif tag in ("input", "select", "textarea") and a.get("name"):
            field = {
                "name": a["name"],
                "value": a.get("value") or "",
                "type": a.get("data-type"),
                "disabled": disabled,
            }
            self.fields.append(field)
            if tag == "select":
                field["value"] = None
                self._select = field
            if tag == "textarea":
                self._textarea = field
        elif tag == "option" and self._select is not None:
            if self._select["value"] is None or "selected" in a:
                self._select["value"] = a.get("value")
                self._select["pending"] = "value" not in a  # the option's text is its value

    def handle_data(self, data: str) -> None:
        if self._select is not None and self._select.pop("pending", False):
            self._select["value"] = data
        if self._textarea is not None:
            self._textarea["value"] += data

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag == "form":
            self.depth, self.done = 0, True
        elif tag == "fieldset":
            self._open.pop()
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def _form(html: str) -> _Form:
    form = _Form()
    form.feed(html)
    return form


def _body(form: _Form, **values: str) -> dict[str, Any]:
    """The JSON static/forms.js sends for these fields, after filling in `values` by name."""
    body: dict[str, Any] = {}
    for f in form.fields:
        if f["disabled"] or f["name"] == "csrf_token":
            continue
        raw = values.get(f["name"], f["value"] or "")
        if f["type"] == "lines":
            value: Any = [line.strip() for line in raw.split("\n") if line.strip()] or None
        elif raw == "":
            value = None
        else:
            value = int(raw) if f["type"] == "int" and raw.isdigit() else raw
        if value is None:
            continue
        *path, last = f["name"].split(".")
        node = body
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    body = _lists(body)
    for fs in form.fieldsets:
        if fs.get("data-object") and fs["data-object"] not in body:
            body[str(fs["data-object"])] = None
    return body


def _lists(value: Any) -> Any:
    """Numbered names made lists of their filled entries, in order (forms.js `compact`)."""
    if not isinstance(value, dict):
        return value
    if value and all(k.isdigit() for k in value):
        return [_lists(value[k]) for k in sorted(value, key=int)]
    return {k: _lists(v) for k, v in value.items()}


def _values(form: _Form) -> dict[str, Any]:
    return {f["name"]: f["value"] for f in form.fields}


def _fieldset(form: _Form) -> dict[str, str | None]:
    (fs,) = [f for f in form.fieldsets if f.get("data-object") == "whatsapp"]
    return fs


async def _template(c: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Shipping", "channel": "whatsapp", "body": "Hi {{ name }}"} | fields
    r = await c.post("/api/v1/templates", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_a_whatsapp_template_shows_its_approved_template_filled_in(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    tpl = await _template(c, whatsapp=META)
    r = await c.get(f"/templates/{tpl['id']}")
    assert r.status_code == 200
    assert SCRIPT not in r.text and "&lt;script&gt;" in r.text
    form = _form(r.text)
    fs = _fieldset(form)
    assert "hidden" not in fs and "disabled" not in fs
    got = _values(form)
    assert got["whatsapp.name"] == "shipping_update"
    assert got["whatsapp.language"] == "en_US"
    assert got["whatsapp.parameters"].strip() == "{{ name }}\n" + SCRIPT
    assert (got["whatsapp.header.type"], got["whatsapp.header.parameter"]) == (
        "image",
        "https://cdn.example.test/{{ attributes.photo }}",
    )
    assert [
        got[f"whatsapp.buttons.{i}.{k}"] for i in (0, 1, 2) for k in ("sub_type", "index", "parameter")
    ] == [
        "url",
        "0",
        "track/{{ attributes.order }}",
        "quick_reply",
        "2",
        "stop",
        "",
        "",
        "",
    ]
    # What the form sends back unchanged is the template's own metadata: the names are the API's.
    assert _body(form)["whatsapp"] == META
    r = await c.patch(f"/api/v1/templates/{tpl['id']}", json=_body(form))
    assert r.status_code == 200 and r.json()["whatsapp"] == META


async def test_the_fields_are_hidden_and_sent_as_null_for_other_channels(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    new = _form((await c.get("/templates")).text)  # the new-template form starts on email
    fs = _fieldset(new)
    assert fs.get("data-for-channel") == "whatsapp" and "hidden" in fs and "disabled" in fs
    assert _body(new, name="Welcome", body="Hi")["whatsapp"] is None
    email = await _template(c, channel="email", name="Mail")
    fs = _fieldset(_form((await c.get(f"/templates/{email['id']}")).text))
    assert "hidden" in fs and "disabled" in fs
    # A viewer sees a whatsapp template's fields, but cannot change them.
    tpl = await _template(c, whatsapp=META)
    viewer = await browser_client("viewer")
    fs = _fieldset(_form((await viewer.get(f"/templates/{tpl['id']}")).text))
    assert "hidden" not in fs and "disabled" in fs


async def test_what_the_form_sends_is_validated_by_the_server_naming_the_field(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    page = (await c.get("/templates")).text
    assert re.search(r'data-api-url="/api/v1/templates"[^>]*>', page)
    form = _form(page)
    for f in form.fields:  # the channel picked: whatsapp
        f["disabled"] = False
    filled = {
        "name": "Bad",
        "channel": "whatsapp",
        "body": "Hi",
        "whatsapp.name": "Order-Update",
        "whatsapp.language": "en_US",
        "whatsapp.header.type": "image",
        "whatsapp.header.parameter": "not a link",
        "whatsapp.buttons.0.sub_type": "url",
        "whatsapp.buttons.0.index": "12",
        "whatsapp.buttons.0.parameter": "x",
    }
    r = await c.post("/api/v1/templates", json=_body(form, **filled))
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"whatsapp.name", "whatsapp.buttons.0.index"}
    # Each error reaches the form's problem box (static/forms.js shows `field: message` per error).
    assert '<div class="problem" role="alert"></div>' in page
    r = await c.post(
        "/api/v1/templates",
        json=_body(form, **filled | {"whatsapp.name": "order_update", "whatsapp.buttons.0.index": "1"}),
    )
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["whatsapp.header.parameter"]
    ok = filled | {
        "whatsapp.name": "order_update",
        "whatsapp.buttons.0.index": "1",
        "whatsapp.header.parameter": "https://cdn.example.test/a.jpg",
    }
    r = await c.post("/api/v1/templates", json=_body(form, **ok))
    assert r.status_code == 201, r.text
    assert r.json()["whatsapp"] == {
        "name": "order_update",
        "language": "en_US",
        "parameters": [],
        "header": {"type": "image", "parameter": "https://cdn.example.test/a.jpg"},
        "buttons": [{"sub_type": "url", "index": 1, "parameter": "x"}],
    }


async def test_the_twilio_content_sid_and_media_source_and_file_name_are_edited_too(
    app: Any, browser_client: BrowserFactory
) -> None:
    c = await browser_client("agent")
    meta = {
        "name": "invoice_ready",
        "language": "en_US",
        "content_sid": "HX" + "5b" * 16,
        "parameters": ["{{ name }}"],
        "header": {
            "type": "document",
            "parameter": "{{ attributes.invoice_media }}",
            "source": "id",
            "filename": "Invoice {{ attributes.order }}.pdf",
        },
    }
    tpl = await _template(c, whatsapp=meta)
    form = _form((await c.get(f"/templates/{tpl['id']}")).text)
    got = _values(form)
    assert got["whatsapp.content_sid"] == meta["content_sid"]
    assert (got["whatsapp.header.source"], got["whatsapp.header.filename"]) == (
        "id",
        "Invoice {{ attributes.order }}.pdf",
    )
    # Sent back unchanged, it is the template's own metadata.
    assert _body(form)["whatsapp"] == meta
    # A template for Twilio only: no name or language; a link header leaves source and file name out.
    twilio_only = {
        "whatsapp.name": "",
        "whatsapp.language": "",
        "whatsapp.header.type": "image",
        "whatsapp.header.parameter": "https://cdn.example.test/a.jpg",
        "whatsapp.header.source": "",
        "whatsapp.header.filename": "",
    }
    r = await c.patch(f"/api/v1/templates/{tpl['id']}", json=_body(form, **twilio_only))
    assert r.status_code == 200, r.text
    assert r.json()["whatsapp"] == {
        "content_sid": meta["content_sid"],
        "parameters": ["{{ name }}"],
        "header": {"type": "image", "parameter": "https://cdn.example.test/a.jpg"},
    }
    # A bad SID is the server's to refuse, naming the field.
    r = await c.patch(f"/api/v1/templates/{tpl['id']}", json=_body(form, **{"whatsapp.content_sid": "HX1"}))
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["whatsapp.content_sid"]
