"""refunds: the refunds table; invoices may hold several credit notes per charge

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UNRESOLVED = "status = 'pending'"
ONE_PER_CHARGE = "kind <> 'credit_note'"


def upgrade() -> None:
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("charge_id", sa.String(length=40), nullable=False),
        sa.Column("psp", sa.String(length=32), nullable=False),
        sa.Column("amount", worker.db.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("psp_reference", sa.String(length=120), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_text", sa.String(length=300), nullable=True),
        sa.Column("iban", sa.String(length=34), nullable=True),
        sa.Column("holder", sa.String(length=140), nullable=True),
        sa.Column("sync_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("needs_attention", sa.Boolean(), nullable=False),
        sa.Column("transaction_id", sa.String(length=40), nullable=True),
        sa.Column("credit_note_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'requires_details', 'succeeded', 'failed')",
            name="ck_refunds_status",
        ),
        sa.CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["charge_id"], ["charges.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_refunds_charge", "refunds", ["charge_id"])
    op.create_index("ix_refunds_account_created", "refunds", ["account_id", "created_at"])
    op.create_index(
        "ix_refunds_unresolved",
        "refunds",
        ["next_attempt_at"],
        postgresql_where=sa.text(UNRESOLVED),
        sqlite_where=sa.text(UNRESOLVED),
    )
    # A charge refunded in parts has one credit note per refund.
    op.drop_index("uq_invoices_charge_kind", table_name="invoices")
    op.create_index(
        "uq_invoices_charge_kind",
        "invoices",
        ["charge_id", "kind"],
        unique=True,
        postgresql_where=sa.text(ONE_PER_CHARGE),
        sqlite_where=sa.text(ONE_PER_CHARGE),
    )


def downgrade() -> None:
    op.drop_index("uq_invoices_charge_kind", table_name="invoices")
    op.create_index("uq_invoices_charge_kind", "invoices", ["charge_id", "kind"], unique=True)
    op.drop_index("ix_refunds_unresolved", table_name="refunds")
    op.drop_index("ix_refunds_account_created", table_name="refunds")
    op.drop_index("ix_refunds_charge", table_name="refunds")
    op.drop_table("refunds")
