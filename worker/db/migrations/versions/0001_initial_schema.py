"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 05:45:33.795457
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import worker.db.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("suspension_reason", sa.String(length=16), nullable=True),
        sa.Column(
            "emails",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("display_currency", sa.String(length=3), nullable=False),
        sa.Column("balance", worker.db.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("auto_reload_enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "auto_reload_threshold", worker.db.types.Money(precision=20, scale=6), nullable=True
        ),
        sa.Column(
            "auto_reload_amount", worker.db.types.Money(precision=20, scale=6), nullable=True
        ),
        sa.Column("auto_reload_method_id", sa.String(length=40), nullable=True),
        sa.Column("alerts_enabled", sa.Boolean(), nullable=False),
        sa.Column("alert_threshold", worker.db.types.Money(precision=20, scale=6), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="ck_accounts_status"),
        sa.CheckConstraint(
            "suspension_reason IS NULL OR suspension_reason IN ('depleted', 'admin')",
            name="ck_accounts_suspension_reason",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("occurred_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("published_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("publish_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_account", "events", ["account_id", "occurred_at"], unique=False)
    op.create_index(
        "ix_events_unpublished",
        "events",
        ["occurred_at"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column(
            "recipients",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("transport", sa.String(length=16), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", worker.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_mail_status"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index(
        "ix_mail_due",
        "mail_outbox",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code", sa.String(length=120), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("amount", worker.db.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance_after", worker.db.types.Money(precision=20, scale=6), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "kind", "reference", name="uq_ledger_txn_reference"),
    )
    op.create_index(
        "ix_ledger_txn_account_created",
        "ledger_transactions",
        ["account_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "postings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("ledger_account_id", sa.Integer(), nullable=False),
        sa.Column("amount", worker.db.types.Money(precision=20, scale=6), nullable=False),
        sa.ForeignKeyConstraint(
            ["ledger_account_id"],
            ["ledger_accounts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_postings_ledger_account", "postings", ["ledger_account_id"], unique=False)
    op.create_index("ix_postings_transaction", "postings", ["transaction_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_postings_transaction", table_name="postings")
    op.drop_index("ix_postings_ledger_account", table_name="postings")
    op.drop_table("postings")
    op.drop_index("ix_ledger_txn_account_created", table_name="ledger_transactions")
    op.drop_table("ledger_transactions")
    op.drop_table("ledger_accounts")
    op.drop_index(
        "ix_mail_due",
        table_name="mail_outbox",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.drop_table("mail_outbox")
    op.drop_index(
        "ix_events_unpublished",
        table_name="events",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.drop_index("ix_events_account", table_name="events")
    op.drop_table("events")
    op.drop_table("accounts")
