"""consent: message/template/campaign categories, the consent ledger and its current state,
suppression notes and who added them

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-03 09:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import server.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ledger_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("workspace_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
    ]


def _refs(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f(f"fk_{table}_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f(f"fk_{table}_contact_id_contact"), ondelete="CASCADE"
        ),
    ]


def upgrade() -> None:
    with op.batch_alter_table("message") as t:
        t.add_column(
            sa.Column("category", sa.String(length=16), server_default="transactional", nullable=False)
        )
    with op.batch_alter_table("template") as t:
        t.add_column(
            sa.Column("category", sa.String(length=16), server_default="transactional", nullable=False)
        )
    with op.batch_alter_table("campaign") as t:
        t.add_column(sa.Column("category", sa.String(length=16), server_default="marketing", nullable=False))
    with op.batch_alter_table("suppression") as t:
        t.add_column(sa.Column("note", sa.Text(), nullable=True))
        t.add_column(sa.Column("created_by", BIG_ID, nullable=True))
    op.create_table(
        "consent",
        *_ledger_columns(),
        sa.Column("actor_id", BIG_ID, nullable=True),
        sa.Column(
            "evidence",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", server.db.UTCDateTime(timezone=True), nullable=False),
        *_refs("consent"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent")),
    )
    op.create_index("ix_consent_contact_id_id", "consent", ["contact_id", "id"])
    op.create_table(
        "consent_state",
        *_ledger_columns(),
        sa.Column("consent_id", BIG_ID, nullable=False),
        sa.Column("at", server.db.UTCDateTime(timezone=True), nullable=False),
        *_refs("consent_state"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_state")),
        sa.UniqueConstraint(
            "contact_id", "channel", "scope", name=op.f("uq_consent_state_contact_id_channel_scope")
        ),
    )


def downgrade() -> None:
    op.drop_table("consent_state")
    op.drop_index("ix_consent_contact_id_id", table_name="consent")
    op.drop_table("consent")
    with op.batch_alter_table("suppression") as t:
        t.drop_column("created_by")
        t.drop_column("note")
    for table in ("campaign", "template", "message"):
        with op.batch_alter_table(table) as t:
            t.drop_column("category")
