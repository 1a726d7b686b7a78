"""message.via_provider_id: the connection a conversation reply goes out through

A reply on a phone channel (sms, whatsapp) goes out through the connection the customer wrote to
(DESIGN §8), not the channel's first: a WhatsApp customer of a Twilio number gets the reply from
that Twilio number even when the workspace also has a Cloud API connection.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-14 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Nullable without a default: PostgreSQL adds it without rewriting the table.
    with op.batch_alter_table("message") as t:
        t.add_column(sa.Column("via_provider_id", BIG_ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message") as t:
        t.drop_column("via_provider_id")
