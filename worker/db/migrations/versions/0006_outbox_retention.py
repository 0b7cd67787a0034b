"""outbox retention: indexes for deleting published events and finished mails

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_events_published", "events", "published_at", "published_at IS NOT NULL"),
    ("ix_mail_sent", "mail_outbox", "sent_at", "status = 'sent'"),
    ("ix_mail_failed", "mail_outbox", "created_at", "status = 'failed'"),
]
_VALID = sa.text(
    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND c.relnamespace = to_regnamespace(current_schema())"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name, table, column, where in INDEXES:
            op.create_index(name, table, [column], sqlite_where=sa.text(where))
        return
    # The events table is written by every money transaction and, before this version,
    # was never trimmed: a plain CREATE INDEX would block those writes while it reads the
    # whole table. CONCURRENTLY must run outside a transaction. A build that was
    # interrupted leaves an invalid index of that name: it is dropped and built again.
    with op.get_context().autocommit_block():
        for name, table, column, where in INDEXES:
            valid = op.get_bind().execute(_VALID, {"name": name}).scalar_one_or_none()
            if valid:
                continue
            if valid is not None:
                op.drop_index(name, table_name=table, postgresql_concurrently=True)
            op.create_index(
                name,
                table,
                [column],
                postgresql_where=sa.text(where),
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name, table, _column, _where in reversed(INDEXES):
            op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        for name, table, _column, _where in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
