"""`/u/{token}`: unsubscribing from marketing, for recipients (no login, no CSRF).

RFC 8058: a mail client's one-click `POST` with the form body `List-Unsubscribe=One-Click` is
answered 200 at once, with no cookie, redirect or CSRF token (the signed token is the capability).
A `GET` never changes anything (mail scanners follow every link): it shows a page whose button
posts the confirmation, and a "keep me subscribed" choice that changes nothing."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from server.consent import tokens
from server.consent.models import ConsentSource
from server.consent.unsubscribe import opt_out
from server.errors import Problem
from ui.web import CSP, env, services

ONE_CLICK = "One-Click"


def _page(status: int, **context: object) -> HTMLResponse:
    html = env.get_template("unsubscribe.html").render(v=None, **context)
    response = HTMLResponse(html, status_code=status)
    response.headers["cache-control"] = "no-store"
    response.headers["content-security-policy"] = CSP
    response.headers["referrer-policy"] = "no-referrer"  # the token stays out of other sites' logs
    return response


async def unsubscribe_page(request: Request) -> Response:
    token = request.path_params["token"]
    asked = tokens.verify(tokens.secrets_of(services(request).settings), token)
    if asked is None:
        return _page(404, state="unknown", token="", channel="")
    state = "kept" if request.query_params.get("keep") else "ask"
    return _page(200, state=state, token=token, channel=asked.channel)


async def unsubscribe_post(request: Request) -> Response:
    token = request.path_params["token"]
    form = await request.form()
    if form.get("List-Unsubscribe") == ONE_CLICK:
        source = ConsentSource.list_unsubscribe_post
    elif form.get("confirm"):
        source = ConsentSource.link
    else:
        raise Problem(400, "Post List-Unsubscribe=One-Click (RFC 8058), or confirm from the page.")
    svc = services(request)
    async with svc.db.transaction() as s:
        done = await opt_out(s, svc.settings, token, source=source)
    if done is None:
        if source is ConsentSource.list_unsubscribe_post:
            raise Problem(404, "No such subscription.")
        return _page(404, state="unknown", token="", channel="")
    if source is ConsentSource.list_unsubscribe_post:
        return Response("Unsubscribed.\n", media_type="text/plain")
    return _page(200, state="done", token=token, channel=done.request.channel)


routes = [
    Route("/u/{token}", unsubscribe_page, methods=["GET"]),
    Route("/u/{token}", unsubscribe_post, methods=["POST"]),
]
