"""payment methods and charges

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 05:52:32.068528
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_methods",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("psp", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=120), nullable=True),
        sa.Column("fingerprint", sa.String(length=80), nullable=True),
        sa.Column("display", sa.String(length=120), nullable=False),
        sa.Column("brand", sa.String(length=32), nullable=True),
        sa.Column("last4", sa.String(length=4), nullable=True),
        sa.Column("expiry", sa.String(length=7), nullable=True),
        sa.Column("payer_email", sa.String(length=254), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("removed_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("type IN ('card', 'paypal', 'bank_transfer')", name="ck_pm_type"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_payment_methods_account", "payment_methods", ["account_id"], unique=False)
    op.create_index(
        "uq_payment_methods_default",
        "payment_methods",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("is_default AND removed_at IS NULL"),
        sqlite_where=sa.text("is_default AND removed_at IS NULL"),
    )
    op.create_index(
        "uq_payment_methods_fingerprint",
        "payment_methods",
        ["fingerprint"],
        unique=True,
        postgresql_where=sa.text("removed_at IS NULL AND fingerprint IS NOT NULL"),
        sqlite_where=sa.text("removed_at IS NULL AND fingerprint IS NOT NULL"),
    )
    op.create_table(
        "charges",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("payment_method_id", sa.String(length=40), nullable=False),
        sa.Column("psp", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("amount", worker.db.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("psp_reference", sa.String(length=120), nullable=True),
        sa.Column("decline_code", sa.String(length=64), nullable=True),
        sa.Column("decline_text", sa.String(length=300), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sync_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("needs_attention", sa.Boolean(), nullable=False),
        sa.Column("transaction_id", sa.String(length=40), nullable=True),
        sa.Column("available_on", sa.Date(), nullable=True),
        sa.Column("settlement_status", sa.String(length=16), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('processing', 'pending', 'unknown', 'not_attempted', 'succeeded', 'declined', 'failed')",
            name="ck_charges_status",
        ),
        sa.CheckConstraint("amount > 0", name="ck_charges_amount_positive"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["payment_method_id"],
            ["payment_methods.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(
        "ix_charges_account_created", "charges", ["account_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_charges_unresolved",
        "charges",
        ["status", "next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('processing', 'unknown', 'pending')"),
        sqlite_where=sa.text("status IN ('processing', 'unknown', 'pending')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_charges_unresolved",
        table_name="charges",
        postgresql_where=sa.text("status IN ('processing', 'unknown', 'pending')"),
        sqlite_where=sa.text("status IN ('processing', 'unknown', 'pending')"),
    )
    op.drop_index("ix_charges_account_created", table_name="charges")
    op.drop_table("charges")
    op.drop_index(
        "uq_payment_methods_fingerprint",
        table_name="payment_methods",
        postgresql_where=sa.text("removed_at IS NULL AND fingerprint IS NOT NULL"),
        sqlite_where=sa.text("removed_at IS NULL AND fingerprint IS NOT NULL"),
    )
    op.drop_index(
        "uq_payment_methods_default",
        table_name="payment_methods",
        postgresql_where=sa.text("is_default AND removed_at IS NULL"),
        sqlite_where=sa.text("is_default AND removed_at IS NULL"),
    )
    op.drop_index("ix_payment_methods_account", table_name="payment_methods")
    op.drop_table("payment_methods")
