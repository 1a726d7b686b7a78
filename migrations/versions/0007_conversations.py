"""conversations: conversation, inbound_message, conversation_read, inbound_token; message gains
conversation_id and from_address

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import server.db

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
UTC = server.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversation",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("workspace_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assignee_id", BIG_ID, nullable=True),
        sa.Column("snooze_until", UTC, nullable=True),
        sa.Column("last_message_at", UTC, nullable=False),
        sa.Column("last_inbound_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_conversation_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contact.id"],
            name=op.f("fk_conversation_contact_id_contact"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["user_account.id"],
            name=op.f("fk_conversation_assignee_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation")),
        sa.UniqueConstraint(
            "workspace_id",
            "contact_id",
            "channel",
            name=op.f("uq_conversation_workspace_id_contact_id_channel"),
        ),
    )
    op.create_index(
        "ix_conversation_workspace_activity", "conversation", ["workspace_id", "last_message_at", "id"]
    )
    op.create_index("ix_conversation_contact_id", "conversation", ["contact_id"])

    op.create_table(
        "inbound_message",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("workspace_id", BIG_ID, nullable=False),
        sa.Column("conversation_id", BIG_ID, nullable=False),
        sa.Column("provider_id", BIG_ID, nullable=False),
        sa.Column("provider_message_id", sa.String(length=200), nullable=False),
        sa.Column("from_address", sa.String(length=320), nullable=False),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("full_text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("attachments", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_inbound_message_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name=op.f("fk_inbound_message_conversation_id_conversation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_message")),
        sa.UniqueConstraint(
            "provider_id",
            "provider_message_id",
            name=op.f("uq_inbound_message_provider_id_provider_message_id"),
        ),
    )
    op.create_index("ix_inbound_message_conversation", "inbound_message", ["conversation_id", "id"])
    op.create_index(
        "ix_inbound_message_workspace_pmid", "inbound_message", ["workspace_id", "provider_message_id"]
    )

    op.create_table(
        "conversation_read",
        sa.Column("conversation_id", BIG_ID, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("workspace_id", BIG_ID, nullable=False),
        sa.Column("last_read_inbound_id", BIG_ID, nullable=False),
        sa.Column("read_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name=op.f("fk_conversation_read_conversation_id_conversation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_conversation_read_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_conversation_read_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "user_id", name=op.f("pk_conversation_read")),
    )

    op.create_table(
        "inbound_token",
        sa.Column("provider_id", BIG_ID, nullable=False),
        sa.Column("workspace_id", BIG_ID, nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["provider.id"],
            name=op.f("fk_inbound_token_provider_id_provider"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_inbound_token_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_inbound_token")),
    )

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("conversation_id", BIG_ID, nullable=True))
        batch_op.add_column(sa.Column("from_address", sa.String(length=320), nullable=True))
        batch_op.create_index(batch_op.f("ix_message_conversation_id"), ["conversation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_conversation_id"))
        batch_op.drop_column("from_address")
        batch_op.drop_column("conversation_id")
    op.drop_table("inbound_token")
    op.drop_table("conversation_read")
    op.drop_index("ix_inbound_message_workspace_pmid", table_name="inbound_message")
    op.drop_index("ix_inbound_message_conversation", table_name="inbound_message")
    op.drop_table("inbound_message")
    op.drop_index("ix_conversation_contact_id", table_name="conversation")
    op.drop_index("ix_conversation_workspace_activity", table_name="conversation")
    op.drop_table("conversation")
