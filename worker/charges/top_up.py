"""One charge now (`balance.payments.top_up`, `balancectl top-up`): the charge row is
committed before the PSP is called; a soft failure is retried with the same key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from worker.accounts import service as accounts
from worker.charges import engine
from worker.db.session import UnitOfWork
from worker.kernel import clock
from worker.kernel.errors import ValidationError
from worker.kernel.money import format_amount
from worker.psp.base import ChargeResult, Outcome
from worker.psp.errors import TransportError
from worker.psp.registry import get_adapter


def top_up(
    uow: UnitOfWork,
    *,
    account_id: object,
    amount: object,
    idempotency_key: object,
    payment_method_id: object = None,
    now_fn: Callable[[], datetime] = clock.now,
) -> dict[str, Any]:
    """One charge now. The charge row is committed before the PSP call.

    Returns the charge (`engine.view`) with `charge_id` and the account's `balance` (decimal
    string). `status` may be `requires_action` (3-D Secure: nothing taken, terminal; the
    customer adds the card again) or `pending` (bank transfer: a pro-forma invoice and its
    `payment_instructions`; WeChat Pay: `payment_instructions {psp, qr_code, psp_reference}`).
    Raises ValidationError / NotFound / IdempotencyConflict naming the field, nothing charged."""
    if isinstance(idempotency_key, str) and idempotency_key.strip().startswith(
        engine.INTERNAL_KEYS
    ):
        raise ValidationError("idempotency_key", "this prefix is reserved for automatic charges")
    charge, must_call = engine.begin(
        uow,
        account_id=account_id,
        amount=amount,
        idempotency_key=idempotency_key,
        payment_method_id=payment_method_id,
        now=now_fn(),
    )
    request = engine.request_for(uow.session, charge) if must_call else None
    uow.commit()  # no DB connection is held while the PSP is called
    adapter = get_adapter(charge.psp)
    answer: ChargeResult | None = None
    if request is not None:
        answer = adapter.charge(request)
        charge = engine.apply(uow, charge.id, answer, now_fn())
        uow.commit()
    elif charge.status == "pending" and getattr(adapter, "polls_pending", False):
        # A repeat of a QR-code payment still waiting for the payer: show its code again.
        try:
            answer = adapter.lookup(charge.idempotency_key)
        except TransportError:
            answer = None
    elif charge.status in ("processing", "unknown") and adapter.on_demand:
        # A repeat of a charge already in flight (retry, redelivery): ask the PSP what it
        # knows - never charge again. Nothing known yet: the janitor settles it later.
        try:
            found = adapter.lookup(charge.idempotency_key)
        except TransportError:
            found = None
        if found is not None and found.outcome in (
            Outcome.SUCCEEDED,
            Outcome.DECLINED,
            Outcome.REQUIRES_ACTION,
        ):
            charge = engine.apply(uow, charge.id, found, now_fn())
            uow.commit()
    account = accounts.get(uow.session, charge.account_id)
    uow.session.refresh(account)
    return {
        **engine.view(charge),
        **engine.view_extras(uow.session, charge),
        **_qr_code(charge.psp, charge.status, answer),
        "charge_id": charge.id,
        "balance": format_amount(account.balance, account.currency),
    }


def _qr_code(psp: str, status: str, answer: ChargeResult | None) -> dict[str, Any]:
    """A QR-code payment waiting for the payer (WeChat Pay Native: its `code_url`), as the
    top-up's `payment_instructions {psp, qr_code, psp_reference}`; nothing otherwise.

    The adapter answers `pending` with code `qr_code` and `scan to pay: <code_url>` in its
    text (worker/psp/wechat_pay.py); the code is shown, never stored."""
    if (
        status != "pending"
        or answer is None
        or answer.outcome is not Outcome.PENDING
        or answer.code != "qr_code"
        or not answer.text
    ):
        return {}
    return {
        "payment_instructions": {
            "psp": psp,
            "qr_code": answer.text.split("scan to pay: ", 1)[-1],
            "psp_reference": answer.psp_reference,
        }
    }


SOFT_RETRIES = 2


def soft_retry_delay(retries: int) -> int:
    """Seconds before re-trying a `not_attempted` charge: 5, 10, 20 ... capped at 60."""
    return int(min(5 * 2**retries, 60))


def give_up(
    uow: UnitOfWork, charge_id: str, now_fn: Callable[[], datetime] = clock.now
) -> dict[str, Any]:
    """A charge that stayed `not_attempted` after its retries ends `failed` (nothing charged)."""
    charge = engine.lock(uow.session, charge_id)
    if charge.status == "not_attempted":
        engine.fail(
            uow,
            charge,
            charge.decline_code or "not_attempted",
            charge.decline_text or "the PSP did not process the charge",
            now_fn(),
        )
    account = accounts.get(uow.session, charge.account_id)
    return {
        **engine.view(charge),
        "charge_id": charge.id,
        "balance": format_amount(account.balance, account.currency),
    }
