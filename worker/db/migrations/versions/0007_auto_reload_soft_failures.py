"""auto-reload: reload charges exhausted by soft failures in a row, and when it was reported

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("auto_reload_soft_failures", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "accounts",
        sa.Column(
            "auto_reload_failing_at", worker.db.types.UtcDateTime(timezone=True), nullable=True
        ),
    )


def downgrade() -> None:
    op.drop_column("accounts", "auto_reload_failing_at")
    op.drop_column("accounts", "auto_reload_soft_failures")
