"""Changing the single sign-on settings is in the admin audit log, by field name, never the secret."""

from __future__ import annotations

from typing import Any

from tests.conftest import ClientFactory
from tests.sso.conftest import CLIENT_SECRET, IdP, configure


async def test_sso_changes_are_audited_without_the_client_secret(
    app: Any, idp: IdP, make_client: ClientFactory
) -> None:
    admin = await make_client("admin")
    await configure(admin, idp)
    items = (await admin.get("/api/v1/audit", params={"action": "sso.updated"})).json()["items"]
    assert len(items) == 1 and items[0]["target"] == "sso"
    assert "client_secret" in items[0]["details"]["fields"] and "issuer" in items[0]["details"]["fields"]
    assert CLIENT_SECRET not in str(items)
