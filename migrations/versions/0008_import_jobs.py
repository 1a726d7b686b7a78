"""contact import jobs in the database: progress, resume position, rejected rows

`import_job` gains what a resumable, set-wise import needs (mode, counters, the upload's path and
the byte offset/line after the last committed batch, the lease of the instance running it);
its unused `accepted`/`rejected` columns go (rejected rows get their own table, capped per job).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import server.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


@contextmanager
def _reflection_quiet() -> Iterator[None]:
    """SQLite rebuilds the table from its reflection, which cannot read expression indexes of the
    tables it refers to (lower(name) on workspace); alembic warns and they are left as they are."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection")
        yield


def upgrade() -> None:
    with _reflection_quiet():
        _upgrade()


def downgrade() -> None:
    with _reflection_quiet():
        _downgrade()


def _upgrade() -> None:
    with op.batch_alter_table("import_job", schema=None) as batch_op:
        batch_op.drop_column("accepted")
        batch_op.drop_column("rejected")
        batch_op.add_column(sa.Column("mode", sa.String(length=8), nullable=False, server_default="create"))
        for name in ("created", "updated", "rejected_count"):
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("error", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("path", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("byte_offset", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("line", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", server.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=True))
    # The defaults only filled existing rows; the models set every value.
    with op.batch_alter_table("import_job", schema=None) as batch_op:
        for name in ("mode", "created", "updated", "rejected_count", "host", "byte_offset", "line"):
            batch_op.alter_column(name, server_default=None)
    op.create_table(
        "import_rejected_row",
        sa.Column("id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("errors", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_job.id"],
            name=op.f("fk_import_rejected_row_job_id_import_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_rejected_row")),
    )
    op.create_index("ix_import_rejected_row_job_id_line", "import_rejected_row", ["job_id", "line"])


def _downgrade() -> None:
    op.drop_index("ix_import_rejected_row_job_id_line", table_name="import_rejected_row")
    op.drop_table("import_rejected_row")
    with op.batch_alter_table("import_job", schema=None) as batch_op:
        for name in (
            "finished_at",
            "lease_until",
            "owner",
            "line",
            "byte_offset",
            "host",
            "path",
            "error",
            "rejected_count",
            "updated",
            "created",
            "mode",
        ):
            batch_op.drop_column(name)
        batch_op.add_column(sa.Column("accepted", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("rejected", JSON, nullable=False, server_default="[]"))
