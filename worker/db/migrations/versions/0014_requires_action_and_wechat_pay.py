"""charges may end requires_action (3-D Secure / payer action), auto-reload paused for it;
payment methods of type wechat_pay; when a pending card invoice's settlement was last asked

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.db.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

CHARGE_STATUSES = (
    "processing",
    "pending",
    "unknown",
    "not_attempted",
    "succeeded",
    "declined",
    "failed",
)
METHOD_TYPES = ("card", "paypal", "bank_transfer")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("charges") as batch:
        batch.drop_constraint("ck_charges_status", type_="check")
        batch.create_check_constraint(
            "ck_charges_status", _in("status", (*CHARGE_STATUSES, "requires_action"))
        )
    with op.batch_alter_table("payment_methods") as batch:
        batch.drop_constraint("ck_pm_type", type_="check")
        batch.create_check_constraint("ck_pm_type", _in("type", (*METHOD_TYPES, "wechat_pay")))
    op.add_column(
        "accounts",
        sa.Column(
            "auto_reload_action_required_at",
            worker.db.types.UtcDateTime(timezone=True),
            nullable=True,
        ),
    )
    op.add_column(
        "invoices",
        sa.Column(
            "settlement_checked_at", worker.db.types.UtcDateTime(timezone=True), nullable=True
        ),
    )


def downgrade() -> None:
    op.drop_column("invoices", "settlement_checked_at")
    op.drop_column("accounts", "auto_reload_action_required_at")
    with op.batch_alter_table("payment_methods") as batch:
        batch.drop_constraint("ck_pm_type", type_="check")
        batch.create_check_constraint("ck_pm_type", _in("type", METHOD_TYPES))
    with op.batch_alter_table("charges") as batch:
        batch.drop_constraint("ck_charges_status", type_="check")
        batch.create_check_constraint("ck_charges_status", _in("status", CHARGE_STATUSES))
