"""Sign in and out from the browser: the same auth service and cookies as `/api/v1/auth/*`,
with a double-submit CSRF token on every form. Single sign-on starts from here too: by workspace
short name (`?workspace=`) or by email domain ("Continue with SSO", `POST /login/sso`)."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from server.auth import service as auth_service
from server.auth import signin_limits
from server.auth.api import BAD_CREDENTIALS, clear_session_cookies, set_session_cookies
from server.auth.models import User
from server.auth.principal import REFRESH_COOKIE, check_csrf
from server.auth.tokens import AccessClaims
from server.errors import Problem
from server.sessions import service as sessions
from server.sso import service as sso_service
from server.sso.flow import login_hint, login_option
from server.validators import contains_nul
from ui.web import CSP, ensure_csrf_cookie, env, principal_or_none, renew, safe_next, services


def _login_page(
    request: Request,
    *,
    error: str = "",
    email: str = "",
    status: int = 200,
    sso: object = None,
    next_url: str | None = None,
) -> Response:
    next_url = safe_next(next_url or request.query_params.get("next"))
    response = Response(status_code=status, media_type="text/html")
    csrf = ensure_csrf_cookie(request, response)
    html = env.get_template("login.html").render(
        request=request, v=None, csrf=csrf, error=error, email=email, next_url=next_url, sso=sso
    )
    response.body = response.render(html)
    response.headers["content-length"] = str(len(response.body))
    response.headers["cache-control"] = "no-store"
    response.headers["content-security-policy"] = CSP
    return response


async def login_form(request: Request) -> Response:
    if principal_or_none(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    hint = login_hint(request.query_params.get("login_hint"))  # from "Continue with SSO"
    return _login_page(request, sso=await login_option(request), email=hint or "")


async def login(request: Request) -> Response:
    form = await request.form()
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    try:
        check_csrf(request, str(form.get("csrf_token", "")))
    except Problem:
        return _login_page(request, error="The form expired; please try again.", email=email, status=403)
    if not email or not password:
        return _login_page(request, error="Enter your email and password.", email=email, status=422)
    if contains_nul(email, password):
        return _login_page(request, error="The email or password has a character not allowed.", status=422)
    svc = services(request)
    who = {"email": email, "address": signin_limits.client_address(request)}
    refused = await signin_limits.refusal(svc, **who)
    if refused is not None:
        return _login_page(request, error=signin_limits.wait_message(refused), email=email, status=429)
    device = sessions.Device.of(request)
    async with svc.db.transaction() as s:
        try:
            user = await auth_service.check_credentials(s, email=email, password=password)
        except auth_service.AuthError:
            await signin_limits.record_failure(svc, **who)
            user = None
        sso_only = await sso_service.password_login_refusal(s, user=user) if user is not None else None
    if user is None:
        await sessions.record_failed_sign_in(svc.db, email=email, device=device)
        return _login_page(request, error=BAD_CREDENTIALS, email=email, status=401)
    if sso_only is not None:
        return _login_page(request, error=sso_only, email=email, status=403)
    return await signed_in(request, user, str(form.get("next", "/")))


async def sso_by_email(request: Request) -> Response:
    """`POST /login/sso` ("Continue with SSO"): the login page of the one workspace whose allowed
    domains hold the email's domain ("Sign in with <name>", the email passed on as `login_hint`).
    Says no more than "no single sign-on for this domain" otherwise, and refuses to choose when
    several workspaces claim it. Each lookup spends a token of the address's failed-sign-in bucket.

    Not a redirect straight to the provider: the page's CSP (`form-action 'self'`) also governs
    the redirects that follow a form submission, and the browser would block the provider's origin
    (docs/decisions.md)."""
    form = await request.form()
    email = str(form.get("email", "")).strip()[:254]
    next_url = str(form.get("next", "/"))
    try:
        check_csrf(request, str(form.get("csrf_token", "")))
    except Problem:
        return _login_page(
            request, error="The form expired; please try again.", status=403, next_url=next_url
        )
    domain = None if contains_nul(email) else sso_service.email_domain(email)
    if domain is None:
        error = "Enter your work email address (such as you@example.com) to continue with single sign-on."
        return _login_page(request, error=error, status=422, next_url=next_url)
    svc = services(request)
    refused = await signin_limits.spend_lookup(svc, address=signin_limits.client_address(request))
    if refused is not None:
        return _login_page(request, error=signin_limits.wait_message(refused), status=429, next_url=next_url)
    async with svc.db.transaction() as s:
        found = await sso_service.configs_for_domain(s, domain=domain)
    if not found:
        error = (
            f"There is no single sign-on for {domain}. Sign in with your password, or ask your administrator."
        )
        return _login_page(request, error=error, email=email, status=404, next_url=next_url)
    if len(found) > 1:
        error = (
            f"More than one workspace has set up single sign-on for {domain}, so Switchboard will not"
            " choose one for you: enter your workspace's short name below, or ask your administrator."
        )
        return _login_page(request, error=error, status=409, next_url=next_url)
    workspace, _cfg = found[0]
    query = urlencode({"workspace": workspace.slug, "next": safe_next(next_url), "login_hint": email})
    return RedirectResponse(f"/login?{query}", status_code=303)


async def signed_in(request: Request, user: User, next_url: str, *, method: str = "password") -> Response:
    """Sign `user` in on this browser: a new sign-in (refresh-token family, with the device), an
    access token naming it, the session cookies, the `auth.login` audit entry, and a redirect to
    `next_url`. Password and single sign-on (`method="oidc"`) end here."""
    svc = services(request)
    family = auth_service.new_family_id()
    device = sessions.Device.of(request)
    async with svc.db.transaction() as s:
        refresh = await auth_service.issue_refresh(
            s,
            user_id=user.id,
            ttl_s=svc.settings.refresh_token_ttl_s,
            family_id=family,
            user_agent=device.user_agent,
            ip=device.ip,
        )
        sessions.record_sign_in(s, user=user, device=device, method=method)
    access = svc.tokens.issue(AccessClaims(user.id, user.workspace_id, user.role, session_id=family))
    response = RedirectResponse(safe_next(next_url), status_code=303)
    set_session_cookies(response, svc.settings, access=access, refresh=refresh)
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    try:
        check_csrf(request, str(form.get("csrf_token", "")) or request.headers.get("x-csrf-token"))
    except Problem:
        return Response("Missing or wrong CSRF token.", status_code=403, media_type="text/plain")
    token = request.cookies.get(REFRESH_COOKIE)
    if token:
        async with services(request).db.transaction() as s:
            family = await auth_service.revoke_token(s, token=token)
        if family is not None:
            await services(request).access_ended(session_ids=[family])
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookies(response)
    return response


async def refresh(request: Request) -> Response:
    """For the page scripts: renew the cookies after the access token expired (204), else 401."""
    try:
        check_csrf(request, request.headers.get("x-csrf-token"))
    except Problem:
        return Response(status_code=403)
    got = await renew(request)
    if got is None:
        response = Response(status_code=401)
        clear_session_cookies(response)
        return response
    _principal, renewed = got
    response = Response(status_code=204)
    set_session_cookies(response, services(request).settings, access=renewed.access, refresh=renewed.refresh)
    return response


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/login/sso", sso_by_email, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/session/refresh", refresh, methods=["POST"]),
]
