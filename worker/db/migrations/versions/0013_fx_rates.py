"""fx rates: the ECB's euro reference rates for the display currency

Revision ID: 0013
Revises: 0011
Create Date: 2026-11-30 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fx_rates",
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("rate_date", sa.Date(), nullable=False),
        # NUMERIC on PostgreSQL, the decimal text on SQLite (worker/fx/models.py: ExactRate).
        sa.Column(
            "rate",
            sa.Numeric(24, 10).with_variant(sa.String(length=40), "sqlite"),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("imported_at", worker.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("currency", "rate_date"),
    )


def downgrade() -> None:
    op.drop_table("fx_rates")
