"""low-balance alert state and scan indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DUE = "alerts_enabled AND alert_state = 'armed' AND balance < alert_threshold"
REARM = "alert_state = 'sent' AND balance >= alert_threshold"


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("alert_state", sa.String(length=8), nullable=False, server_default="armed")
        )
        batch.add_column(
            sa.Column("alert_sent_at", worker.db.types.UtcDateTime(timezone=True), nullable=True)
        )
        batch.create_check_constraint("ck_accounts_alert_state", "alert_state IN ('armed', 'sent')")
    op.create_index(
        "ix_accounts_alert_due",
        "accounts",
        ["id"],
        unique=False,
        postgresql_where=sa.text(DUE),
        sqlite_where=sa.text(DUE),
    )
    op.create_index(
        "ix_accounts_alert_rearm",
        "accounts",
        ["id"],
        unique=False,
        postgresql_where=sa.text(REARM),
        sqlite_where=sa.text(REARM),
    )


def downgrade() -> None:
    op.drop_index("ix_accounts_alert_rearm", table_name="accounts")
    op.drop_index("ix_accounts_alert_due", table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint("ck_accounts_alert_state", type_="check")
        batch.drop_column("alert_sent_at")
        batch.drop_column("alert_state")
