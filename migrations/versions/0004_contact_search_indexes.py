"""contact search at scale: pg_trgm GIN indexes for `q`, jsonb_path_ops GIN for `tag`

PostgreSQL only (SQLite searches by scanning, which is fine at its sizes): the indexes behind
server/contacts/search.py. Plain CREATE INDEX: on a large live table run it in a quiet hour
(about a minute per million contacts on a small machine), writes to `contact` wait meanwhile.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGRAM = (  # (index, table, indexed expression)
    ("ix_contact_lower_name_trgm", "contact", "lower(name)"),
    ("ix_contact_lower_email_trgm", "contact", "lower(email)"),
    ("ix_contact_phone_trgm", "contact", "phone"),
    ("ix_contact_identity_value_trgm", "contact_identity", "value"),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, expr in TRIGRAM:
        op.create_index(
            name, table, [sa.text(f"{expr} gin_trgm_ops")], postgresql_using="gin", if_not_exists=True
        )
    # jsonb_path_ops: a third of the size of the default jsonb_ops and faster for `tags @> '["x"]'`,
    # the only operator the tag filter uses.
    op.drop_index("ix_contact_tags", table_name="contact")
    op.create_index("ix_contact_tags", "contact", [sa.text("tags jsonb_path_ops")], postgresql_using="gin")
    op.execute("ANALYZE contact")  # the expression indexes bring statistics the planner needs at once
    op.execute("ANALYZE contact_identity")


def downgrade() -> None:
    if not _postgresql():
        return
    op.drop_index("ix_contact_tags", table_name="contact")
    op.create_index("ix_contact_tags", "contact", ["tags"], postgresql_using="gin")
    for name, table, _expr in TRIGRAM:
        op.drop_index(name, table_name=table)
