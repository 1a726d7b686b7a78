"""index message_event(at): the daily report reads one day of history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 20:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_event_at", "message_event", ["at"])


def downgrade() -> None:
    op.drop_index("ix_message_event_at", table_name="message_event")
