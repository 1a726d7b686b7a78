"""Hostile tenant, live sessions (issue 14 item 6): an open socket never outlives the access it
was opened with, and one tenant's admin can end only their own tenant's sessions."""

from __future__ import annotations

import uuid

from server.auth import service as auth_service
from server.auth.models import Role
from server.db import Database
from server.settings import Settings
from tests.conftest import PASSWORD
from tests.realtime.test_live_access import closed_code
from tests.realtime.test_revocation import WITHIN_S, bearer, instances, redis_settings, subscribed

__all__ = ["redis_settings"]  # the fixture, used by name


async def member(settings: Settings, workspace: str, role: Role) -> tuple[int, str]:
    db = Database(settings.database_url)
    email = f"{role.value}-{uuid.uuid4().hex[:6]}@{workspace.lower()}.test"
    try:
        async with db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name=workspace)
            made = await auth_service.create_user(
                s, workspace_id=ws.id, email=email, password=PASSWORD, role=role
            )
            return made.id, email
    finally:
        await db.dispose()


async def test_a_deactivated_users_socket_is_closed_and_no_other_tenants_socket_is_touched(
    redis_settings: Settings,
) -> None:
    _admin_id, admin_email = await member(redis_settings, "Acme", Role.admin)
    agent_id, agent_email = await member(redis_settings, "Acme", Role.agent)
    other_id, other_email = await member(redis_settings, "Globex", Role.agent)
    async with instances(redis_settings, 2) as (a, b):
        admin = await bearer(a, admin_email)
        agent = await bearer(b, agent_email)
        other = await bearer(b, other_email)
        agent_socket = await subscribed(b.ws(agent["authorization"].removeprefix("Bearer ")))
        other_socket = await subscribed(b.ws(other["authorization"].removeprefix("Bearer ")))

        # Acme's admin cannot reach Globex's user at all (404, not 403: nothing is revealed) ...
        r = await a.http.patch(f"/api/v1/users/{other_id}", json={"is_active": False}, headers=admin)
        assert r.status_code == 404, r.text
        # ... and deactivating their own agent closes that agent's socket on the other instance.
        r = await a.http.patch(f"/api/v1/users/{agent_id}", json={"is_active": False}, headers=admin)
        assert r.status_code == 200, r.text
        assert await closed_code(agent_socket, within_s=WITHIN_S) == 4401

        # The other tenant's socket is still open and served.
        assert (await other_socket.subscribe(["board"], None))["type"] == "subscribed"
        await other_socket.close()
        # The deactivated agent's token is refused on every instance from now on.
        for at in (a, b):
            r = await at.http.get("/api/v1/contacts", headers=agent)
            assert r.status_code == 401, r.text
