from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from server.consent import tokens
from server.consent.models import Consent
from server.db import Database


async def workspace_id(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/v1/me")).json()["workspace_id"])


async def new_contact(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Ada", "email": "ada@example.test", "phone": "+14155552671"} | fields
    r = await client.post("/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def token_for(secret: str, workspace: int, contact_id: int, channel: str = "email") -> str:
    return tokens.sign(secret, workspace_id=workspace, contact_id=contact_id, channel=channel, scope="all")


async def ledger_rows(db: Database) -> int:
    async with db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Consent))).scalar_one())
