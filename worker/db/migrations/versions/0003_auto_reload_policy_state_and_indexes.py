"""auto-reload policy state and indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 06:07:51.449899
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column(
            "auto_reload_backoff_until", worker.db.types.UtcDateTime(timezone=True), nullable=True
        ),
    )
    op.add_column(
        "accounts",
        sa.Column("auto_reload_declines", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "accounts",
        sa.Column(
            "auto_reload_capped_until", worker.db.types.UtcDateTime(timezone=True), nullable=True
        ),
    )
    op.create_index(
        "ix_accounts_auto_reload_due",
        "accounts",
        ["id"],
        unique=False,
        postgresql_where=sa.text("auto_reload_enabled AND balance < auto_reload_threshold"),
        sqlite_where=sa.text("auto_reload_enabled AND balance < auto_reload_threshold"),
    )
    op.create_index(
        "uq_charges_auto_reload_in_flight",
        "charges",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text(
            "purpose = 'auto_reload' AND status IN ('processing', 'unknown', 'pending', 'not_attempted')"
        ),
        sqlite_where=sa.text(
            "purpose = 'auto_reload' AND status IN ('processing', 'unknown', 'pending', 'not_attempted')"
        ),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_charges_auto_reload_in_flight",
        table_name="charges",
        postgresql_where=sa.text(
            "purpose = 'auto_reload' AND status IN ('processing', 'unknown', 'pending', 'not_attempted')"
        ),
        sqlite_where=sa.text(
            "purpose = 'auto_reload' AND status IN ('processing', 'unknown', 'pending', 'not_attempted')"
        ),
    )
    op.drop_index(
        "ix_accounts_auto_reload_due",
        table_name="accounts",
        postgresql_where=sa.text("auto_reload_enabled AND balance < auto_reload_threshold"),
        sqlite_where=sa.text("auto_reload_enabled AND balance < auto_reload_threshold"),
    )
    op.drop_column("accounts", "auto_reload_capped_until")
    op.drop_column("accounts", "auto_reload_declines")
    op.drop_column("accounts", "auto_reload_backoff_until")
