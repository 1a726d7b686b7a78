"""One import batch written set-wise, in the caller's transaction.

The batch is planned in one pass: under the workspace lock (the lock every email/phone write of
the contact service takes), one query finds the batch's addresses that are another contact's
extra identity and one finds the contacts its rows match; then every new contact is written at
once (PostgreSQL: `COPY` with ids taken from the sequence in one statement; SQLite: one multi-row
INSERT), every update in one executemany, and the audit rows in one more. A created contact gets
one audit row, `created` = "import #N"; an updated one, as the recorder in `changes.py` would
write it, a row per changed field with the new version. Consent columns go to the consent
ledger in its batch form (`consent.record_channels`: a few statements per batch, nothing for a
state the contact already has). Events are the caller's: one `import.progress` per batch, not
one `contact.*` or `consent.changed` per contact (docs/decisions.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from sqlalchemy import String, and_, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.consent import service as consent
from server.consent.models import ConsentSource, ConsentState
from server.contacts.changes import lock_workspace
from server.contacts.models import Audit, Contact, ContactIdentity
from server.db import dialect_of, one_of, utcnow

Mode = Literal["create", "upsert"]
UPDATABLE = ("name", "phone", "tags", "attributes")
TAKEN = "already used by another contact"


@dataclass(slots=True)
class Rec:
    """A valid row: the contact's fields and which of them the file gave a value for."""

    line: int
    data: dict[str, Any]  # name, email, phone, tags, attributes (normalised as the API does)
    given: frozenset[str]
    consent: dict[str, ConsentState] = field(default_factory=dict)  # channel -> state, from its columns

    def key(self) -> tuple[str, str] | None:
        """What an upsert matches this row by: its email, else its phone."""
        if self.data["email"]:
            return ("email", self.data["email"].lower())
        if self.data["phone"]:
            return ("phone", self.data["phone"])
        return None


@dataclass(slots=True)
class Outcome:
    created: int = 0
    updated: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"row", "errors"}
    consent: int = 0  # consent ledger rows written


def _reject(out: Outcome, rec: Rec, name: str, message: str) -> None:
    out.rejected.append({"row": rec.line, "errors": [{"field": name, "message": message}]})


async def write_batch(
    session: AsyncSession,
    *,
    workspace_id: int,
    user_id: int | None,
    job_id: int,
    mode: Mode,
    recs: Sequence[Rec],
) -> Outcome:
    """Create (and in upsert mode update) the batch's contacts. The batch must not hold two rows
    with the same key (the importer ends a batch before a repeated key)."""
    out = Outcome()
    if not recs:
        return out
    await lock_workspace(session, workspace_id)
    emails = sorted({r.data["email"].lower() for r in recs if r.data["email"]})
    phones = sorted({r.data["phone"] for r in recs if r.data["phone"]})
    taken = await _identities(session, workspace_id, emails, phones)
    by_email = await _contacts(session, workspace_id, func.lower(Contact.email), emails)
    by_phone: dict[str, dict[str, Any]] = {}
    if mode == "upsert":
        loose = sorted({r.data["phone"] for r in recs if r.data["phone"] and not r.data["email"]})
        by_phone = await _contacts(session, workspace_id, Contact.phone, loose)
    now = utcnow()
    creates: list[Rec] = []
    updates: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    kept: list[tuple[Rec, int]] = []  # rows with consent columns, and their contact
    for rec in recs:
        d = rec.data
        email = d["email"].lower() if d["email"] else None
        if email and ("email", email) in taken:
            _reject(out, rec, "email", TAKEN)
            continue
        if d["phone"] and ("phone", d["phone"]) in taken:
            _reject(out, rec, "phone", TAKEN)
            continue
        current = by_email.get(email) if email else by_phone.get(d["phone"]) if d["phone"] else None
        if current is None:
            creates.append(rec)
        elif mode == "create":
            _reject(out, rec, "email", TAKEN)
        else:
            if rec.consent:
                kept.append((rec, current["id"]))
            change = _changes(current, rec)
            if change:
                version = current["version"] + 1
                updates.append({**current, **change, "version": version, "updated_at": now})
                audit += [
                    _audit(workspace_id, current["id"], user_id, k, current[k], v, version, now)
                    for k, v in change.items()
                ]
    if creates:
        ids = await _writer(session).insert_contacts(session, workspace_id, [r.data for r in creates], now)
        audit += [_audit(workspace_id, i, user_id, "created", None, f"import #{job_id}", 1, now) for i in ids]
        out.created = len(ids)
        kept += [(r, i) for r, i in zip(creates, ids, strict=True) if r.consent]
    if updates:
        await session.execute(
            update(Contact), [{k: u[k] for k in ("id", *UPDATABLE, "version", "updated_at")} for u in updates]
        )
        out.updated = len(updates)
    if audit:
        await _writer(session).insert_audit(session, audit)
    if kept:
        out.consent = await consent.record_channels(
            session,
            workspace_id=workspace_id,
            decisions=[
                consent.ChannelDecision(
                    contact_id, channel, state, {"import_job_id": job_id, "line": rec.line}
                )
                for rec, contact_id in kept
                for channel, state in rec.consent.items()
            ],
            source=ConsentSource.import_,
            actor_id=user_id,
        )
    return out


def _changes(current: dict[str, Any], rec: Rec) -> dict[str, Any]:
    """The fields an upsert changes: those the row gives a value for (attributes merged key by key)."""
    d = rec.data
    new: dict[str, Any] = {}
    for name in ("name", "phone", "tags"):
        if name in rec.given and d[name] != current[name]:
            new[name] = d[name]
    if d["attributes"]:
        merged = {**current["attributes"], **d["attributes"]}
        if merged != current["attributes"]:
            new["attributes"] = merged
    return new


def _audit(
    ws: int, contact_id: int, by: int | None, name: str, old: Any, new: Any, version: int, at: dt.datetime
) -> dict[str, Any]:
    return {
        "workspace_id": ws,
        "contact_id": contact_id,
        "user_id": by,
        "field": name,
        "old": old,
        "new": new,
        "version": version,
        "at": at,
    }


async def _identities(
    session: AsyncSession, ws: int, emails: list[str], phones: list[str]
) -> set[tuple[str, str]]:
    wanted = [(kind, values) for kind, values in (("email", emails), ("phone", phones)) if values]
    if not wanted:
        return set()
    rows = await session.execute(
        select(ContactIdentity.kind, ContactIdentity.value).where(
            ContactIdentity.workspace_id == ws,
            or_(
                *(
                    and_(
                        ContactIdentity.kind == kind,
                        one_of(dialect_of(session), ContactIdentity.value, values, String()),
                    )
                    for kind, values in wanted
                )
            ),
        )
    )
    return {(k, v) for k, v in rows}


async def _contacts(session: AsyncSession, ws: int, key: Any, values: list[str]) -> dict[str, dict[str, Any]]:
    """The contacts whose `key` is one of `values`, by that value (the oldest when several share it)."""
    if not values:
        return {}
    cols = (
        Contact.id,
        Contact.name,
        Contact.email,
        Contact.phone,
        Contact.tags,
        Contact.attributes,
        Contact.version,
    )
    stmt = (
        select(key.label("k"), *cols)
        .where(Contact.workspace_id == ws, one_of(dialect_of(session), key, values, String()))
        .order_by(Contact.id)
    )
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update(of=Contact)
    out: dict[str, dict[str, Any]] = {}
    for row in (await session.execute(stmt)).mappings():
        out.setdefault(row["k"], {c.key: row[c.key] for c in cols})
    return out


class _Writer:
    """Multi-row INSERTs through SQLAlchemy: SQLite, and any database without COPY."""

    async def insert_contacts(
        self, session: AsyncSession, ws: int, rows: list[dict[str, Any]], now: dt.datetime
    ) -> list[int]:
        values = [{**r, "workspace_id": ws, "version": 1, "created_at": now, "updated_at": now} for r in rows]
        result = await session.execute(
            insert(Contact).returning(Contact.id, sort_by_parameter_order=True), values
        )
        return [int(i) for i in result.scalars()]

    async def insert_audit(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        await session.execute(insert(Audit), rows)


class _PgWriter(_Writer):
    """COPY: ids for the new contacts come from the sequence in one statement, then the rows go
    in binary, several times faster than any INSERT."""

    async def insert_contacts(
        self, session: AsyncSession, ws: int, rows: list[dict[str, Any]], now: dt.datetime
    ) -> list[int]:
        ids = [
            int(i)
            for i in (
                await session.execute(
                    text(
                        "SELECT nextval(pg_get_serial_sequence('contact', 'id')) FROM generate_series(1, :n)"
                    ),
                    {"n": len(rows)},
                )
            ).scalars()
        ]
        records = [
            (i, ws, r["name"], r["email"], r["phone"], _json(r["attributes"]), _json(r["tags"]), 1, now, now)
            for i, r in zip(ids, rows, strict=True)
        ]
        columns = [
            "id",
            "workspace_id",
            "name",
            "email",
            "phone",
            "attributes",
            "tags",
            "version",
            "created_at",
            "updated_at",
        ]
        await (await _asyncpg(session)).copy_records_to_table("contact", records=records, columns=columns)
        return ids

    async def insert_audit(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        records = [
            (
                r["workspace_id"],
                r["contact_id"],
                r["user_id"],
                r["field"],
                _json(r["old"]),
                _json(r["new"]),
                r["version"],
                r["at"],
            )
            for r in rows
        ]
        columns = ["workspace_id", "contact_id", "user_id", "field", "old", "new", "version", "at"]
        await (await _asyncpg(session)).copy_records_to_table("audit", records=records, columns=columns)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _asyncpg(session: AsyncSession) -> Any:
    """The asyncpg connection under this session's transaction (COPY is not in SQLAlchemy)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


_WRITERS = {"postgresql": _PgWriter()}
_DEFAULT = _Writer()


def _writer(session: AsyncSession) -> _Writer:
    return _WRITERS.get(dialect_of(session), _DEFAULT)
