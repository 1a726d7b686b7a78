"""contact search by a short term: btree text_pattern_ops indexes for email, phone and identity prefixes

PostgreSQL only, like 0004: a `q` under three characters has no trigram, so server/contacts/search.py
matches it as a prefix, and these indexes answer `lower(email) LIKE 'te%'`, `phone LIKE '+4%'` and
an identity's `value LIKE …` within a workspace (the name's words are served by 0004's trigrams).
`text_pattern_ops` because LIKE may use a plain btree only under the C collation. Plain CREATE
INDEX: on a large live table run it in a quiet hour, writes to `contact` wait meanwhile.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-12 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREFIX = (  # (index, table, leading columns, indexed expression)
    ("ix_contact_lower_email_prefix", "contact", ("workspace_id",), "lower(email)"),
    ("ix_contact_phone_prefix", "contact", ("workspace_id",), "phone"),
    ("ix_contact_identity_value_prefix", "contact_identity", ("workspace_id", "kind"), "value"),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    for name, table, leading, expr in PREFIX:
        op.create_index(name, table, [*leading, sa.text(f"{expr} text_pattern_ops")], if_not_exists=True)
    op.execute("ANALYZE contact")
    op.execute("ANALYZE contact_identity")


def downgrade() -> None:
    if not _postgresql():
        return
    for name, table, _leading, _expr in PREFIX:
        op.drop_index(name, table_name=table)
