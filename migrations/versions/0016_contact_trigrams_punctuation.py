"""contact search: the name, email and identity trigram indexes see `.@+-_` as a letter

pg_trgm splits words at punctuation, so a term such as `linus.t` looked up the trigrams of `linus`
and rechecked every contact named Linus. These indexes are built over the text with `.@+-_` mapped
to `q` (server/contacts/search.py asks the same expression, `trigram_text`, then the column itself),
and replace 0004's on the same columns; 0004's phone index stays (a phone has only its `+`).
PostgreSQL only. Plain CREATE INDEX: on a large live table run it in a quiet hour (about 15 s per
million contacts on a small machine), writes to `contact` wait meanwhile.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-13 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out, not imported: a migration keeps meaning what it meant when it was written.
PUNCTUATED = "translate({}, '.@+-_', 'qqqqq')"
REPLACED = (  # (0004's index, the new one, table, column expression)
    ("ix_contact_lower_name_trgm", "ix_contact_name_words_trgm", "contact", "lower(name)"),
    ("ix_contact_lower_email_trgm", "ix_contact_email_words_trgm", "contact", "lower(email)"),
    ("ix_contact_identity_value_trgm", "ix_contact_identity_words_trgm", "contact_identity", "value"),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    for old, new, table, expr in REPLACED:
        op.create_index(
            new,
            table,
            [sa.text(f"{PUNCTUATED.format(expr)} gin_trgm_ops")],
            postgresql_using="gin",
            if_not_exists=True,
        )
        op.drop_index(old, table_name=table, if_exists=True)
    op.execute("ANALYZE contact")  # statistics of the new expressions, for the planner at once
    op.execute("ANALYZE contact_identity")


def downgrade() -> None:
    if not _postgresql():
        return
    for old, new, table, expr in REPLACED:
        op.create_index(
            old, table, [sa.text(f"{expr} gin_trgm_ops")], postgresql_using="gin", if_not_exists=True
        )
        op.drop_index(new, table_name=table, if_exists=True)
