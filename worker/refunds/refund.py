"""One refund now (`balancectl refund`, `balance.payments.refund`): the refund row and the
balance it takes are committed before the PSP is called; a repeat of the key returns that
refund, asking the PSP what became of one still in flight (never refunding again)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from worker.charges.models import Charge
from worker.db.session import UnitOfWork
from worker.kernel import clock
from worker.psp.registry import get_adapter
from worker.refunds import janitor, service
from worker.refunds.models import RefundStatus


def refund(
    uow: UnitOfWork,
    *,
    charge_id: object,
    amount: object = None,
    reason: object = None,
    idempotency_key: object,
    now_fn: Callable[[], datetime] = clock.now,
) -> dict[str, Any]:
    """One refund (`balancectl refund`, `balance.payments.refund`): the row and the balance
    move are committed before the PSP is called; a repeat of the key returns that refund
    (asking the PSP what became of one still in flight, never refunding again).

    Returns the refund view plus `balance`. Raises as `begin`."""
    row, must_call = service.begin(
        uow,
        charge_id=charge_id,
        amount=amount,
        reason=reason,
        idempotency_key=idempotency_key,
        now=now_fn(),
    )
    request = None
    if must_call:
        charge = uow.session.get(Charge, row.charge_id)
        assert charge is not None
        request = service.request_for(row, charge)
    refund_id, psp = row.id, row.psp
    uow.commit()  # no connection is held while the PSP is called
    if request is not None:
        answer = get_adapter(psp).refund(request)
        row = service.apply(uow, refund_id, answer, now_fn())
        uow.commit()
    elif row.status == RefundStatus.PENDING:
        janitor.look_up_now(uow, row.id, now_fn())
        row = service.get(uow.session, refund_id)
    return service.result_of(uow.session, row)
