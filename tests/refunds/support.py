"""Helpers the refunds tests share (on top of tests/invoices/support.py)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from tests.invoices import support as s
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.psp.registry import get_adapter
from worker.refunds import refund as refunds
from worker.refunds.models import Refund
from worker.usage import service as usage

CARD = "fake-valid-visa-nonce"
PAYPAL = "fake-paypal-billing-agreement-nonce"


def card_account(
    amount: str = "100.00", *, psp: str = "braintree", nonce: str = CARD, locale: str = "en"
) -> tuple[str, str]:
    """An account with one succeeded card (or PayPal) top-up of `amount`: (account, charge)."""
    account_id = s.account(locale=locale)
    method = s.method(account_id, psp, f"{nonce}:{uuid.uuid4().hex[:8]}")
    charged = s.top_up(account_id, amount, method)
    assert charged["status"] == "succeeded", charged
    return account_id, str(charged["charge_id"])


def refund(charge_id: str, amount: str | None = None, key: str | None = None) -> dict[str, Any]:
    with unit_of_work() as uow:
        return refunds.refund(
            uow,
            charge_id=charge_id,
            amount=amount,
            reason="customer asked",
            idempotency_key=key or f"r-{uuid.uuid4().hex}",
        )


def debit(account_id: str, amount: str) -> None:
    with unit_of_work() as uow:
        usage.debit(
            uow, account_id=account_id, amount=amount, reference=f"u-{uuid.uuid4().hex}", now=now()
        )


def rows(charge_id: str) -> list[Refund]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Refund).where(Refund.charge_id == charge_id).order_by(Refund.created_at)
            )
        )


def charge(charge_id: str) -> Charge:
    with unit_of_work() as uow:
        found = uow.session.get(Charge, charge_id)
        assert found is not None
        return found


def remote_refunds(key: str, psp: str = "braintree") -> int:
    """How many refunds the sandbox holds under this refund key."""
    remote = get_adapter(psp).remote  # type: ignore[attr-defined]
    from worker.psp.sandbox import remote_charges

    with remote.engine.connect() as conn:
        return len(
            conn.execute(
                select(remote_charges.c.reference).where(
                    remote_charges.c.psp == f"{psp}:refund",
                    remote_charges.c.idempotency_key == key,
                )
            ).all()
        )
