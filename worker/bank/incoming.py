"""An incoming bank transfer as the bank reports it, checked field by field before
anything is written (the task, `bank receive`, and each line of a statement)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from worker.charges import engine
from worker.kernel import validation
from worker.kernel.errors import ValidationError

MEMO_MAX = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Incoming:
    """One transfer as the bank reports it, checked."""

    amount: Decimal
    currency: str
    bank_reference: str
    memo: str | None
    value_date: date | None
    booking_date: date | None = None


def _date(value: object, field_name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValidationError(field_name, "must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(field_name, f"is not a date YYYY-MM-DD: {value[:20]!r}") from None


def check(
    *,
    amount: object,
    currency: object,
    bank_reference: object,
    memo: object = None,
    value_date: object = None,
    booking_date: object = None,
) -> Incoming:
    """Validate one transfer (each error names its field); nothing is written."""
    ref = validation.reference(bank_reference, "bank_reference")
    cur = validation.currency(currency)
    value = engine.chargeable_amount(amount, cur)
    if value <= 0:
        raise ValidationError("amount", "must be positive (money in)")
    text_ = None
    if memo is not None:
        if not isinstance(memo, str):
            raise ValidationError("memo", "must be a string")
        # Free text from a payer: card numbers redacted, line breaks folded.
        text_ = validation.text(
            _CONTROL.sub(" ", memo), "memo", max_length=MEMO_MAX, required=False
        )
    return Incoming(
        amount=value,
        currency=cur,
        bank_reference=ref,
        memo=text_,
        value_date=_date(value_date, "value_date"),
        booking_date=_date(booking_date, "booking_date"),
    )
