"""local time: workspace settings (quiet hours, default time zone, keyword help text) and the
campaign's local send time

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("workspace") as t:
        t.add_column(sa.Column("settings", JSON, server_default="{}", nullable=False))
    with op.batch_alter_table("campaign") as t:
        t.add_column(sa.Column("local_time", sa.String(length=5), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign") as t:
        t.drop_column("local_time")
    with op.batch_alter_table("workspace") as t:
        t.drop_column("settings")
