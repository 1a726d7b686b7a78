from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    event,
    func,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONType, UTCDateTime, utcnow

POSTGRESQL_ONLY = {
    "dialects": ("postgresql",)
}  # Index.info: migrations and the schema check skip it elsewhere


# The trigram indexes need pg_trgm: migration 0004 creates it, and so does `metadata.create_all`
# (tests and tools that build the schema from the models) before the tables.
event.listen(
    Base.metadata,
    "before_create",
    DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute_if(dialect="postgresql"),
)


def _postgresql_index(name: str, *columns: str, target: str | Any, ops: str, using: str) -> Index:
    """An index on `columns` then `target` (a column name or an expression) in operator class `ops`."""
    key = target if isinstance(target, str) else name + "_expr"
    return Index(
        name,
        *columns,
        target if isinstance(target, str) else target.label(key),
        postgresql_using=using,
        postgresql_ops={key: ops},
        info=POSTGRESQL_ONLY,
    ).ddl_if(dialect="postgresql")


def trigram_index(name: str, target: str | Any) -> Index:
    """A pg_trgm GIN index serving `target LIKE '%…%'` (server/contacts/search.py); PostgreSQL only.
    `target` is a column name or an expression."""
    return _postgresql_index(name, target=target, ops="gin_trgm_ops", using="gin")


# Punctuation the search's trigram indexes read as a letter, so that a term's punctuation is part
# of its trigrams (server/contacts/search.py; migration 0016 spells the same expression out).
PUNCTUATION, AS_LETTER = ".@+-_", "q" * len(".@+-_")


def words_text(column: Any) -> Any:
    """`column` with PUNCTUATION as AS_LETTER, as those indexes are built (constants inline, as indexed)."""
    return func.translate(column, literal_column(f"'{PUNCTUATION}'"), literal_column(f"'{AS_LETTER}'"))


def prefix_index(name: str, *columns: str, target: str | Any) -> Index:
    """A btree on `columns` then `target` in text_pattern_ops, serving `target LIKE 'te%'` within
    them (the short terms of server/contacts/search.py, whatever the collation); PostgreSQL only."""
    return _postgresql_index(name, *columns, target=target, ops="text_pattern_ops", using="btree")


class Contact(Base):
    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(300), default="")
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("uq_contact_workspace_lower_email", "workspace_id", func.lower(email), unique=True),
        Index("ix_contact_workspace_phone", "workspace_id", "phone"),
        Index("ix_contact_tags", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}),
        Index("ix_contact_workspace_id_id", "workspace_id", "id"),
        # search (q): one trigram index per arm of the OR, see server/contacts/search.py
        trigram_index("ix_contact_name_words_trgm", words_text(func.lower(name))),
        trigram_index("ix_contact_email_words_trgm", words_text(func.lower(email))),
        trigram_index("ix_contact_phone_trgm", "phone"),
        # search (q) by a term under three characters: prefixes (the name's words use the trigrams)
        prefix_index("ix_contact_lower_email_prefix", "workspace_id", target=func.lower(email)),
        prefix_index("ix_contact_phone_prefix", "workspace_id", target="phone"),
    )


class ContactIdentity(Base):
    """Extra emails and phones of a contact (the primary ones live on `contact`).

    Every address, primary or not, is unique within its workspace; the service checks both tables.
    """

    __tablename__ = "contact_identity"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # email | phone
    value: Mapped[str] = mapped_column(String(320))  # lower-cased email or E.164 phone

    __table_args__ = (
        UniqueConstraint("workspace_id", "kind", "value"),
        trigram_index("ix_contact_identity_words_trgm", words_text(value)),
        prefix_index("ix_contact_identity_value_prefix", "workspace_id", "kind", target="value"),
    )


class Audit(Base):
    """One changed field of one contact: the change feed and the contact's history."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigId)  # kept after the contact is deleted
    user_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    api_key_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # set when a key made the change
    field: Mapped[str] = mapped_column(String(100))
    old: Mapped[Any] = mapped_column(JSONType, nullable=True)
    new: Mapped[Any] = mapped_column(JSONType, nullable=True)
    version: Mapped[int] = mapped_column(Integer)  # the contact version this change produced
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_audit_workspace_contact", "workspace_id", "contact_id", "id"),)


class ImportJob(Base):
    """One CSV import (server/contacts/importer.py): its progress, where its upload waits on disk
    and how far it got, so that another start of the app resumes it after a crash."""

    __tablename__ = "import_job"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    mode: Mapped[str] = mapped_column(String(8), default="create")  # create|upsert
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|done|failed
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    rejected_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The upload (decompressed CSV) and the position after the last committed batch.
    path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    byte_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    line: Mapped[int] = mapped_column(Integer, default=0)
    # The instance running it and until when it holds it (renewed while it runs).
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ImportRejectedRow(Base):
    """A row of an import that was not taken, with its line in the file (header = 1)."""

    __tablename__ = "import_rejected_row"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("import_job.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)

    __table_args__ = (Index("ix_import_rejected_row_job_id_line", "job_id", "line"),)


class BulkJob(Base):
    """One bulk action on the contacts matching a search (server/contacts/bulk.py): what it does,
    which contacts (the filter, up to the newest id when it started) and how far it got, leased
    like an import so another instance resumes it after a crash."""

    __tablename__ = "bulk_job"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    api_key_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    action: Mapped[str] = mapped_column(String(8))  # tag|untag|delete
    tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    filter: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # {"q"?, "tag"?}
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|done|failed
    total: Mapped[int] = mapped_column(Integer, default=0)  # matching contacts counted at the start
    processed: Mapped[int] = mapped_column(Integer, default=0)  # matching contacts walked so far
    changed: Mapped[int] = mapped_column(Integer, default=0)  # of which changed (tagged, untagged, deleted)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The selection's bound (contacts created after the start are not touched) and the keyset cursor.
    max_id: Mapped[int] = mapped_column(BigInteger, default=0)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
