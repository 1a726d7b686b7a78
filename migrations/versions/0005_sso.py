"""single sign-on: workspace slugs, OpenID Connect settings and linked provider accounts

Revision ID: 0005
Revises: 0007
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import server.db

revision: str = "0005"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _slugify(name: str) -> str:
    # As server.workspaces.models.slugify at the time of writing (a migration does not import app code
    # that may change later).
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63] or "workspace"


def upgrade() -> None:
    # Not a batch (table copy) on SQLite: that would lose the lower(name) expression index. So the
    # column comes with a server default that PostgreSQL drops once every row has its slug.
    op.add_column("workspace", sa.Column("slug", sa.String(length=63), nullable=False, server_default=""))
    conn = op.get_bind()
    taken: set[str] = set()
    for ws_id, name in conn.execute(sa.text("SELECT id, name FROM workspace ORDER BY id")).all():
        slug = _slugify(name)
        if slug in taken:  # "Acme!" and "Acme?" both make "acme": the later one gets its id
            slug = f"{slug[:50]}-{ws_id}"
        taken.add(slug)
        conn.execute(sa.text("UPDATE workspace SET slug = :slug WHERE id = :id"), {"slug": slug, "id": ws_id})
    if conn.dialect.name != "sqlite":
        op.alter_column("workspace", "slug", server_default=None)
    op.create_index("uq_workspace_slug", "workspace", ["slug"], unique=True)

    op.create_table(
        "sso_config",
        sa.Column("id", BigId, nullable=False),
        sa.Column("workspace_id", BigId, nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("client_id", sa.String(length=500), nullable=False),
        sa.Column("client_secret", sa.Text(), nullable=False),
        sa.Column("allowed_domains", JSONType, nullable=False),
        sa.Column("role_claim", sa.String(length=100), nullable=False),
        sa.Column("role_map", JSONType, nullable=False),
        sa.Column("default_role", sa.String(length=16), nullable=True),
        sa.Column("require_verified_email", sa.Boolean(), nullable=False),
        sa.Column("password_login", sa.Boolean(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_sso_config_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_config")),
        sa.UniqueConstraint("workspace_id", name=op.f("uq_sso_config_workspace_id")),
    )
    op.create_table(
        "sso_identity",
        sa.Column("id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_sso_identity_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_identity")),
        sa.UniqueConstraint("issuer", "subject", name=op.f("uq_sso_identity_issuer_subject")),
    )
    op.create_index(op.f("ix_sso_identity_user_id"), "sso_identity", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sso_identity_user_id"), table_name="sso_identity")
    op.drop_table("sso_identity")
    op.drop_table("sso_config")
    op.drop_index("uq_workspace_slug", table_name="workspace")
    op.drop_column("workspace", "slug")
