"""whatsapp templates: a template's approved WhatsApp template, and what a message renders of it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Nullable without a default: PostgreSQL adds them without rewriting the tables.
    with op.batch_alter_table("template") as t:
        t.add_column(sa.Column("whatsapp", JSON, nullable=True))
    with op.batch_alter_table("message") as t:
        t.add_column(sa.Column("whatsapp_template", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message") as t:
        t.drop_column("whatsapp_template")
    with op.batch_alter_table("template") as t:
        t.drop_column("whatsapp")
