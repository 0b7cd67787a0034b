"""Refunds of bank-transfer payments (issue 14; seed 002: a bank transfer can only be
refunded to an account the customer names). The refund waits in `requires_details`;
`balancectl refunds details REFUND_ID --iban --holder` names the account, then the bank
payout adapter (worker/psp/bank_payout.py) pays it out: `succeeded` or `failed`.

The details are checked before anything is stored: the IBAN by schwifty (ISO 13616
checksum and the country's length and format), the holder as a name: no control
characters, no card number (a card number is refused and never echoed), at most 70
characters (the SEPA creditor-name limit).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from config import get_settings
from worker.db.session import UnitOfWork
from worker.kernel import clock
from worker.kernel.controls import refuse_control
from worker.kernel.errors import RefundState, ValidationError
from worker.kernel.redaction import contains_pan
from worker.psp.bank_payout import BankPayoutSandbox, PayoutRequest
from worker.refunds import service
from worker.refunds.models import RefundStatus

HOLDER_MAX = 70


def payout_adapter() -> BankPayoutSandbox:
    """The bank payout adapter (the stub: no real bank is configured)."""
    return BankPayoutSandbox(get_settings())


def parse_iban(value: object) -> str:
    """The IBAN in electronic format (`DE89370400440532013000`), spaces allowed in input.
    Raises ValidationError naming `iban` (checksum, country format, length)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("iban", "is required")
    refuse_control(value, "iban")
    if contains_pan(value):
        raise ValidationError("iban", "looks like a card number, not an IBAN")
    try:
        return str(IBAN(value.strip()).compact)
    except SchwiftyException as exc:
        raise ValidationError(
            "iban", f"{value.strip()[:40]!r} is not a valid IBAN: {exc}"
        ) from None


def parse_holder(value: object) -> str:
    """The account holder's name, trimmed. Raises ValidationError naming `holder`."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("holder", "is required")
    refuse_control(value, "holder")
    if contains_pan(value):
        raise ValidationError("holder", "looks like a card number: give the account holder's name")
    name = value.strip()
    if len(name) > HOLDER_MAX:
        raise ValidationError("holder", f"is longer than {HOLDER_MAX} characters")
    return name


def details(
    uow: UnitOfWork,
    *,
    refund_id: object,
    iban: object,
    holder: object,
    now_fn: Callable[[], datetime] = clock.now,
) -> dict[str, Any]:
    """Name the account a bank-transfer refund is paid to, then pay it out.

    The details and the `pending` status are committed before the payout is asked for
    (with the refund's key: a repeat never pays twice). A repeat with the same details of
    a refund already on its way returns it. Raises ValidationError (`iban`, `holder`),
    NotFound (`refund_id`), RefundState (not a refund waiting for details)."""
    account_iban, name = parse_iban(iban), parse_holder(holder)
    refund = service.get(uow.session, refund_id)
    refund = service.lock(uow.session, refund.id)
    if refund.status != RefundStatus.REQUIRES_DETAILS:
        if refund.iban == account_iban and refund.holder == name:
            uow.commit()
            return service.result_of(uow.session, refund)
        raise RefundState(
            "refund_id",
            f"refund {refund.id} is {refund.status}: only a bank-transfer refund waiting for "
            "details takes them",
        )
    now = now_fn()
    refund.iban, refund.holder = account_iban, name
    refund.status = RefundStatus.PENDING
    refund.lease_until = refund.next_attempt_at = service.lease_from_now()
    refund.updated_at = now
    request = PayoutRequest(
        idempotency_key=refund.idempotency_key,
        iban=account_iban,
        holder=name,
        amount_minor=refund.amount_minor,
        currency=refund.currency,
        reference=refund.id,
    )
    uow.commit()  # the details and the key are stored before the bank is asked
    answer = payout_adapter().payout(request)
    refund = service.apply(uow, refund.id, answer, now_fn())
    uow.commit()
    return service.result_of(uow.session, refund)
