"""Exact money: Decimal from strings only, currency exponents, the one rounding place.

Amounts are stored to 6 decimal places (message prices are sub-cent: 0.0057).
A PSP is charged whole minor units (ISO 4217 exponent); `to_minor_units` is the
only function that rounds, and it names its rounding mode.
"""

from __future__ import annotations

import decimal
import re
from decimal import ROUND_HALF_EVEN, Decimal, FloatOperation, InvalidOperation

from babel.numbers import list_currencies

from worker.kernel.errors import ValidationError

SCALE = 6
MICRO = Decimal(1).scaleb(-SCALE)
AMOUNT_RE = re.compile(r"^-?[0-9]{1,14}(\.[0-9]{1,6})?$")
# The largest magnitude stored (NUMERIC(20,6)): the grammar's largest amount.
MAX_AMOUNT = Decimal("99999999999999.999999")
# The one named rounding mode used when money must be rounded (minor units for a PSP).
ROUNDING = ROUND_HALF_EVEN

# ISO 4217 exponents that differ from the common 2.
_EXPONENTS: dict[str, int] = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}  # fmt: skip


def trap_floats() -> None:
    """Make mixing float into Decimal arithmetic an error in this thread and new ones."""
    decimal.DefaultContext.traps[FloatOperation] = True
    decimal.getcontext().traps[FloatOperation] = True


# ISO 4217 X-codes that are no currency an account can hold (issue fixred, point 4): no
# currency, testing, precious metals, SDR and bond-market / accounting units, and withdrawn
# units (European Currency Unit, gold and UIC francs, RINET funds). Real currencies starting
# with X stay valid: XAF, XOF, XPF (CFA and CFP francs), XCD, XCG (Caribbean).
NOT_CURRENCIES = frozenset(
    {"XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU",
     "XUA", "XAD", "XEU", "XFO", "XFU", "XRE"}
)  # fmt: skip


def is_currency(code: str) -> bool:
    """An ISO 4217 currency code (CLDR's list) an account can hold: not in NOT_CURRENCIES."""
    return (
        bool(re.fullmatch(r"[A-Z]{3}", code))
        and code not in NOT_CURRENCIES
        and code in list_currencies()
    )


def exponent(currency: str) -> int:
    """ISO 4217 minor-unit exponent (EUR 2, JPY 0, KWD 3)."""
    return _EXPONENTS.get(currency, 2)


def parse_amount(
    value: object,
    field: str = "amount",
    *,
    allow_negative: bool = False,
    allow_zero: bool = False,
) -> Decimal:
    """Parse a decimal string per CONTRACT.md; refuse floats, exponents, NaN, >6 dp.

    The grammar is exact (`AMOUNT_RE`, the one in CONTRACT.md with ASCII digits only): white
    space around the digits (a leading space, a trailing newline, a tab) is refused, not
    trimmed, so every path (CLI, task, setting) reads a string as the same amount or not at all.
    Raises ValidationError naming `field`; never rounds.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        kind = type(value).__name__
        raise ValidationError(field, f'must be a decimal string like "5.70", not a {kind}')
    text = value
    if not AMOUNT_RE.fullmatch(text):
        if text != text.strip():
            raise ValidationError(field, f"has white space around the digits: {text[:40]!r}")
        if re.fullmatch(r"-?[0-9]+\.[0-9]{7,}", text):
            raise ValidationError(field, f"has more than {SCALE} decimal places: {text!r}")
        raise ValidationError(field, f"is not a decimal string: {text[:40]!r}")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards
        raise ValidationError(field, f"is not a decimal string: {text[:40]!r}") from exc
    if amount < 0 and not allow_negative:
        raise ValidationError(field, "must be positive")
    if amount == 0 and not allow_zero:
        raise ValidationError(field, "must not be zero")
    return amount


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Whole minor units for a PSP, rounded half-even: the only rounding in the system."""
    exp = exponent(currency)
    return int(amount.scaleb(exp).quantize(Decimal(1), rounding=ROUNDING))


def to_micros(amount: Decimal) -> int:
    """Exact integer micro-units (for databases without an exact decimal type)."""
    scaled = amount.scaleb(SCALE)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"amount {amount} has more than {SCALE} decimal places")
    return int(scaled)


def from_micros(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-SCALE)


def format_amount(amount: Decimal, currency: str | None = None) -> str:
    """Canonical decimal string: at least the currency's minor digits, at most 6, no exponent."""
    minimum = exponent(currency) if currency else 0
    quantized = amount.quantize(MICRO)
    if quantized != amount:  # formatting never rounds: to_minor_units is the one place
        raise ValueError(f"amount {amount} has more than {SCALE} decimal places")
    text = f"{quantized:f}"
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0")
        frac = frac.ljust(minimum, "0")
        text = f"{whole}.{frac}" if frac else whole
    elif minimum:
        text = f"{text}.{'0' * minimum}"
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]
    return text
