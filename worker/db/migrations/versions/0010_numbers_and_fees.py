"""numbers and recurring fees: the numbers table, accounts.next_fee_at and the look-ahead index

Revision ID: 0010
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None

LIVE = "status <> 'cancelled'"
SUSPENDED = "status = 'suspended'"
LOOKAHEAD = "auto_reload_enabled AND next_fee_at IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "numbers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("msisdn", sa.String(length=20), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("monthly_fee", worker.db.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("anchor_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("periods_paid", sa.Integer(), nullable=False),
        sa.Column("next_renewal_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("failed_period", sa.Integer(), nullable=True),
        sa.Column("suspended_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.String(length=16), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'cancelled')", name="ck_numbers_status"
        ),
        sa.CheckConstraint(
            "cancel_reason IS NULL OR cancel_reason IN ('customer', 'unpaid', 'depleted')",
            name="ck_numbers_cancel_reason",
        ),
        sa.CheckConstraint("monthly_fee > 0", name="ck_numbers_fee_positive"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_numbers_account", "numbers", ["account_id"])
    op.create_index(
        "uq_numbers_msisdn_live",
        "numbers",
        ["msisdn"],
        unique=True,
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )
    op.create_index(
        "ix_numbers_renewal_due",
        "numbers",
        ["next_renewal_at", "account_id"],
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )
    op.create_index(
        "ix_numbers_suspended",
        "numbers",
        ["suspended_at", "account_id"],
        postgresql_where=sa.text(SUSPENDED),
        sqlite_where=sa.text(SUSPENDED),
    )
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("next_fee_at", worker.db.types.UtcDateTime(timezone=True), nullable=True)
        )
    op.create_index(
        "ix_accounts_fee_lookahead",
        "accounts",
        ["next_fee_at"],
        postgresql_where=sa.text(LOOKAHEAD),
        sqlite_where=sa.text(LOOKAHEAD),
    )


def downgrade() -> None:
    op.drop_index("ix_accounts_fee_lookahead", table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("next_fee_at")
    op.drop_index("ix_numbers_suspended", table_name="numbers")
    op.drop_index("ix_numbers_renewal_due", table_name="numbers")
    op.drop_index("uq_numbers_msisdn_live", table_name="numbers")
    op.drop_index("ix_numbers_account", table_name="numbers")
    op.drop_table("numbers")
