"""invoices and bank transfers: account company, finance email, RF reference, unapplied
funds; invoices, invoice counters, bank transfers; mail attachments

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types
from worker.db.base import JsonType
from worker.kernel.bank_settings import new_creditor_reference

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

OPEN = "status = 'open'"
PENDING = "status = 'pending'"
UNMATCHED = "status = 'unmatched'"


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("company", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("finance_email", sa.String(length=254), nullable=True))
        batch.add_column(sa.Column("bank_reference", sa.String(length=35), nullable=True))
        batch.add_column(
            sa.Column("unapplied", worker.db.types.Money(), nullable=False, server_default="0")
        )
    # Existing accounts get their own reference too (random: nothing to derive it from).
    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM accounts"))]
    for account_id in ids:
        conn.execute(
            sa.text("UPDATE accounts SET bank_reference = :ref WHERE id = :id"),
            {"ref": new_creditor_reference(), "id": account_id},
        )
    op.create_index("uq_accounts_bank_reference", "accounts", ["bank_reference"], unique=True)

    with op.batch_alter_table("mail_outbox") as batch:
        batch.add_column(sa.Column("attachments", JsonType, nullable=True))

    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("account_id", sa.String(length=40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("charge_id", sa.String(length=40), sa.ForeignKey("charges.id"), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=True, unique=True),
        sa.Column("amount", worker.db.types.Money(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("proforma_id", sa.String(length=40), nullable=True),
        sa.Column("corrects", sa.String(length=40), nullable=True),
        sa.Column("payment_reference", sa.String(length=200), nullable=True),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("issuer", JsonType, nullable=False),
        sa.Column("customer", JsonType, nullable=False),
        sa.Column("instructions", JsonType, nullable=True),
        sa.Column("due_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("issued_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("paid_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("voided_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('proforma', 'final', 'credit_note')", name="ck_invoices_kind"),
        sa.CheckConstraint(
            "status IN ('pending', 'open', 'paid', 'issued', 'void')", name="ck_invoices_status"
        ),
        sa.CheckConstraint("amount > 0", name="ck_invoices_amount_positive"),
        sa.CheckConstraint(
            "(number IS NULL) = (status = 'pending')", name="ck_invoices_numbered_unless_pending"
        ),
    )
    op.create_index("uq_invoices_charge_kind", "invoices", ["charge_id", "kind"], unique=True)
    op.create_index(
        "ix_invoices_open",
        "invoices",
        ["account_id", "currency", "created_at"],
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )
    op.create_index(
        "ix_invoices_pending_due",
        "invoices",
        ["due_at"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_index("ix_invoices_account_created", "invoices", ["account_id", "created_at"])

    op.create_table(
        "invoice_counters",
        sa.Column("series", sa.String(length=8), primary_key=True),
        sa.Column("year", sa.Integer(), primary_key=True),
        sa.Column("last", sa.Integer(), nullable=False),
    )

    op.create_table(
        "bank_transfers",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("bank_reference", sa.String(length=200), nullable=False, unique=True),
        sa.Column("amount", worker.db.types.Money(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column("booking_date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=40), sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("result", JsonType, nullable=False),
        sa.Column("received_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("assigned_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('matched', 'partial', 'unapplied', 'unmatched')",
            name="ck_bank_transfers_status",
        ),
        sa.CheckConstraint("amount > 0", name="ck_bank_transfers_amount_positive"),
    )
    op.create_index(
        "ix_bank_transfers_unmatched",
        "bank_transfers",
        ["received_at"],
        postgresql_where=sa.text(UNMATCHED),
        sqlite_where=sa.text(UNMATCHED),
    )
    op.create_index("ix_bank_transfers_account", "bank_transfers", ["account_id", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_bank_transfers_account", table_name="bank_transfers")
    op.drop_index("ix_bank_transfers_unmatched", table_name="bank_transfers")
    op.drop_table("bank_transfers")
    op.drop_table("invoice_counters")
    op.drop_index("ix_invoices_account_created", table_name="invoices")
    op.drop_index("ix_invoices_pending_due", table_name="invoices")
    op.drop_index("ix_invoices_open", table_name="invoices")
    op.drop_index("uq_invoices_charge_kind", table_name="invoices")
    op.drop_table("invoices")
    with op.batch_alter_table("mail_outbox") as batch:
        batch.drop_column("attachments")
    op.drop_index("uq_accounts_bank_reference", table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("unapplied")
        batch.drop_column("bank_reference")
        batch.drop_column("finance_email")
        batch.drop_column("company")
