"""Provider connections: config checked by the kind's adapter; secrets stay in the database."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations.webhooks import inbound_url
from server.db import utcnow
from server.endpoints.guard import refused_destination
from server.errors import NotFound
from server.providers.adapters import ADAPTERS, ConfigError
from server.providers.models import Provider


class ProviderNotFound(NotFound):
    what = "provider"


def webhook_url(base_url: str, provider_id: int) -> str:
    """Where this connection's provider posts its events (`SWITCHBOARD_PUBLIC_URL` or the request's origin)."""
    return f"{base_url.rstrip('/')}/webhooks/{provider_id}"


def checked_config(
    kind: str, channel: str, config: Mapping[str, Any], *, allow_private: bool
) -> dict[str, Any]:
    """The normalised config, or `ConfigError` listing every problem (the channel included, and
    hosts that are not public: see `server/endpoints/guard.py`)."""
    adapter = ADAPTERS[kind]
    errors: list[dict[str, str]] = []
    if channel not in adapter.channels:
        errors.append(
            {"field": "channel", "message": f"{kind} sends {', '.join(sorted(adapter.channels))} only"}
        )
    out: dict[str, Any] = {}
    try:
        out = adapter.validate_config(config)
    except ConfigError as exc:
        errors.extend(exc.errors)
    if not allow_private:
        for key in sorted(adapter.endpoint_keys):
            value = out.get(key)
            if isinstance(value, str) and (why := refused_destination(value)):
                errors.append({"field": f"config.{key}", "message": why})
    if errors:
        raise ConfigError(errors)
    return out


def secrets_to_repeat(
    kind: str, old: Mapping[str, Any], new: Mapping[str, Any], given: Mapping[str, Any]
) -> list[str]:
    """The stored secrets a patch must give again because it changes where the connection points:
    kept as they were, they would be sent to the new place (a write-only secret an admin could
    read by pointing the connection at a server of their own)."""
    adapter = ADAPTERS[kind]
    if all(old.get(k) == new.get(k) for k in adapter.location_keys):
        return []
    return sorted(k for k in adapter.secret_keys if new.get(k) not in (None, "") and k not in given)


def public_view(p: Provider, base_url: str) -> dict[str, Any]:
    """Everything the API may show: never a secret config value (unknown kinds show no config)."""
    adapter = ADAPTERS.get(p.kind)
    config = dict(p.config or {})
    secret_keys = adapter.secret_keys if adapter is not None else frozenset(config)
    return {
        "id": p.id,
        "name": p.name,
        "kind": p.kind,
        "channel": p.channel,
        "priority": p.priority,
        "config": {k: v for k, v in config.items() if k not in secret_keys},
        "secrets_set": sorted(k for k in secret_keys if config.get(k) not in (None, "")),
        "send_rate": p.send_rate,
        "enabled": p.enabled,
        "webhook_url": webhook_url(base_url, p.id),
        "inbound_url": inbound_url(base_url, p.id, p.kind),  # conversations (DESIGN §8)
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


async def create_provider(
    session: AsyncSession, *, workspace_id: int, data: dict[str, Any], allow_private: bool
) -> Provider:
    config = checked_config(
        data["kind"], data["channel"], data.get("config") or {}, allow_private=allow_private
    )
    now = utcnow()
    p = Provider(
        workspace_id=workspace_id,
        name=data["name"],
        kind=data["kind"],
        channel=data["channel"],
        priority=data.get("priority", 100),
        config=config,
        send_rate=data.get("send_rate"),
        enabled=data.get("enabled", True),
        webhook_key=secrets.token_hex(32),
        created_at=now,
        updated_at=now,
    )
    session.add(p)
    await session.flush()
    return p


async def get_provider(
    session: AsyncSession, *, workspace_id: int, provider_id: int, for_update: bool = False
) -> Provider:
    stmt = select(Provider).where(Provider.id == provider_id, Provider.workspace_id == workspace_id)
    if for_update:
        stmt = stmt.with_for_update()
    p = (await session.execute(stmt)).scalar_one_or_none()
    if p is None:
        raise ProviderNotFound(provider_id)
    return p


async def list_providers(
    session: AsyncSession, *, workspace_id: int, channel: str | None, after_id: int | None, limit: int
) -> list[Provider]:
    """Oldest first (a stable order for the cursor)."""
    stmt = select(Provider).where(Provider.workspace_id == workspace_id)
    if channel:
        stmt = stmt.where(Provider.channel == channel)
    if after_id is not None:
        stmt = stmt.where(Provider.id > after_id)
    rows = await session.execute(stmt.order_by(Provider.id).limit(limit))
    return list(rows.scalars())


async def update_provider(
    session: AsyncSession,
    *,
    workspace_id: int,
    provider_id: int,
    changes: dict[str, Any],
    allow_private: bool,
) -> Provider:
    p = await get_provider(session, workspace_id=workspace_id, provider_id=provider_id, for_update=True)
    if "config" in changes or "channel" in changes:
        old = dict(p.config or {})
        given = changes.get("config") or {}
        merged = dict(old)
        for key, value in given.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        config = checked_config(
            p.kind, changes.get("channel", p.channel), merged, allow_private=allow_private
        )
        if missing := secrets_to_repeat(p.kind, old, config, given):
            raise ConfigError(
                [
                    {
                        "field": f"config.{k}",
                        "message": "must be given again when the connection is re-pointed",
                    }
                    for k in missing
                ]
            )
        p.config = config
    for name in ("name", "channel", "priority", "send_rate", "enabled"):
        if name in changes:
            setattr(p, name, changes[name])
    p.updated_at = utcnow()
    await session.flush()
    return p


async def delete_provider(session: AsyncSession, *, workspace_id: int, provider_id: int) -> None:
    """Messages sent through it keep its id and kind for their history."""
    p = await get_provider(session, workspace_id=workspace_id, provider_id=provider_id, for_update=True)
    await session.delete(p)
