"""settlement: when PSP money becomes available; system ledger transactions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PENDING = "settlement_status = 'pending'"
SYSTEM = "account_id IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("charges") as batch:
        batch.add_column(
            sa.Column("settles_at", worker.db.types.UtcDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("settlement_rule", sa.String(length=120), nullable=True))
        batch.add_column(
            sa.Column("settled_at", worker.db.types.UtcDateTime(timezone=True), nullable=True)
        )
        batch.create_check_constraint(
            "ck_charges_settlement_status",
            "settlement_status IS NULL OR settlement_status IN ('pending', 'available')",
        )
    op.create_index(
        "ix_charges_settlement_due",
        "charges",
        ["settles_at"],
        unique=False,
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    with op.batch_alter_table("ledger_transactions") as batch:
        batch.alter_column("account_id", existing_type=sa.String(length=40), nullable=True)
        batch.alter_column("balance_after", existing_type=worker.db.types.Money(), nullable=True)
        batch.create_check_constraint(
            "ck_ledger_txn_system_shape", "(account_id IS NULL) = (balance_after IS NULL)"
        )
    op.create_index(
        "uq_ledger_txn_system_reference",
        "ledger_transactions",
        ["kind", "reference"],
        unique=True,
        postgresql_where=sa.text(SYSTEM),
        sqlite_where=sa.text(SYSTEM),
    )


def downgrade() -> None:
    op.drop_index("uq_ledger_txn_system_reference", table_name="ledger_transactions")
    op.execute(
        "DELETE FROM postings WHERE transaction_id IN "
        "(SELECT id FROM ledger_transactions WHERE account_id IS NULL)"
    )
    op.execute("DELETE FROM ledger_transactions WHERE account_id IS NULL")
    with op.batch_alter_table("ledger_transactions") as batch:
        batch.drop_constraint("ck_ledger_txn_system_shape", type_="check")
        batch.alter_column("balance_after", existing_type=worker.db.types.Money(), nullable=False)
        batch.alter_column("account_id", existing_type=sa.String(length=40), nullable=False)
    op.drop_index("ix_charges_settlement_due", table_name="charges")
    with op.batch_alter_table("charges") as batch:
        batch.drop_constraint("ck_charges_settlement_status", type_="check")
        batch.drop_column("settled_at")
        batch.drop_column("settlement_rule")
        batch.drop_column("settles_at")
