"""maintained board counters: message_count (per workspace, hour, status, channel) and its deltas

`message_count` is filled from the messages already there, so the board reads the same figures
before and after the upgrade (a GROUP BY over `message` once: about a second per million rows).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0009"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The hour a message was created in, as each database stores a UTCDateTime.
_HOUR = {
    "postgresql": "date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    "sqlite": "strftime('%Y-%m-%d %H:00:00.000000', created_at)",
}


def upgrade() -> None:
    op.create_table(
        "message_count",
        sa.Column("workspace_id", BIG, nullable=False, autoincrement=False),
        sa.Column("bucket", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("n", BIG, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_message_count_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "bucket", "status", "channel", name=op.f("pk_message_count")),
    )
    op.create_table(
        "message_count_delta",
        sa.Column("id", BIG, nullable=False),
        sa.Column("workspace_id", BIG, nullable=False),
        sa.Column("bucket", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("n", BIG, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_message_count_delta_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_count_delta")),
    )
    hour = _HOUR[op.get_bind().dialect.name]
    op.execute(
        "INSERT INTO message_count (workspace_id, bucket, status, channel, n)"
        f" SELECT workspace_id, {hour}, status, channel, count(*) FROM message"
        f" GROUP BY workspace_id, {hour}, status, channel"
    )


def downgrade() -> None:
    op.drop_table("message_count_delta")
    op.drop_table("message_count")
