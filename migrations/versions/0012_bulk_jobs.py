"""bulk actions on contacts: the `bulk_job` table, and messages indexed by contact

A bulk action (tag, untag, delete) on every contact matching a search runs as a leased background
job (server/contacts/bulk.py); its row keeps the filter, the id bound taken at the start, the
keyset cursor and the counters, so any instance answers its status and resumes it.

Revision ID: 0012
Revises: 0006
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import server.db

revision: str = "0012"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "bulk_job",
        sa.Column("id", ID, nullable=False),
        sa.Column("workspace_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("api_key_id", ID, nullable=True),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=True),
        sa.Column("filter", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("max_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_bulk_job_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_job")),
    )
    op.create_index(op.f("ix_bulk_job_workspace_id"), "bulk_job", ["workspace_id"])
    # The contact FK's ON DELETE SET NULL finds messages by contact alone (one lookup per deleted
    # contact): (workspace_id, contact_id) cannot serve it, so a delete scanned every message.
    op.create_index("ix_message_contact_id", "message", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_message_contact_id", table_name="message")
    op.drop_index(op.f("ix_bulk_job_workspace_id"), table_name="bulk_job")
    op.drop_table("bulk_job")
