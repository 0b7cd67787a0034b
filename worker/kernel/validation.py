"""Field checks shared by services: each raises ValidationError naming the field.

Control characters (issue 11, worker/kernel/controls.py): an identifier, key, reference, code or
address holding one is refused naming the field, before any query; free text (names,
descriptions, reasons) is cleaned instead: see `text`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from worker.kernel.controls import clean_text as clean_text
from worker.kernel.controls import refuse_control as refuse_control
from worker.kernel.errors import ValidationError
from worker.kernel.money import is_currency
from worker.kernel.redaction import contains_pan, redact

LOCALES = ("en", "ja", "zh")
MAX_EMAILS = 10


def identifier(value: object, field: str) -> str:
    """An id a caller names (account, payment method): a non-empty string without control
    characters, surrounding spaces trimmed. Raises ValidationError naming `field`."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required")
    return refuse_control(value, field).strip()


# Two-letter CLDR territories that are no ISO 3166-1 assigned country (issue fixred, point
# 4): groupings (EU, EZ, UN, QO), unknown (ZZ), pseudo-locales (XA, XB) and the exceptionally
# reserved codes (AC, CP, CQ, DG, EA, IC, TA). XK (Kosovo) is kept: a user-assigned code in
# wide use for a real country. Same set as worker/settlement/timing.py.
NOT_COUNTRIES = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "ZZ"}
)


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    from babel import Locale  # imported on first use: most commands never check a country

    return frozenset(
        c
        for c in Locale("en").territories
        if isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c) and c not in NOT_COUNTRIES
    )


def text(value: object, field: str, *, max_length: int, required: bool = True) -> str | None:
    """Free text: cleaned, trimmed, bounded, card numbers redacted before anything stores or
    logs it.

    Cleaning is the rule for free text, not refusal (a debit is not refused for a stray byte
    in its description): C0 controls except tab and line feed, DEL, C1 controls and unpaired
    surrogates are removed (`clean_text`), then surrounding white space is trimmed; text left
    empty counts as absent.
    """
    if isinstance(value, str):
        value = clean_text(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(field, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    cleaned = redact(value.strip())
    assert cleaned is not None
    if len(cleaned) > max_length:
        raise ValidationError(field, f"is longer than {max_length} characters")
    return cleaned


def reference(value: object, field: str = "reference") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required (a non-empty string)")
    ref = value.strip()
    if len(ref) > 200:
        raise ValidationError(field, "is longer than 200 characters")
    refuse_control(value, field)
    # An identifier is not free text: redacting would merge distinct references, so a
    # card number here is refused (and never echoed), like a token.
    return refuse_pan(ref, field)


def currency(value: object, field: str = "currency") -> str:
    if isinstance(value, str):
        refuse_control(value, field)
    if not isinstance(value, str) or not is_currency(value.strip().upper()):
        raise ValidationError(field, f"{str(value)[:10]!r} is not an ISO 4217 currency code")
    return value.strip().upper()


def country(value: object, field: str = "country") -> str:
    if isinstance(value, str):
        refuse_control(value, field)
    if not isinstance(value, str) or value.strip().upper() not in _countries():
        raise ValidationError(field, f"{str(value)[:10]!r} is not an ISO 3166 alpha-2 country code")
    return value.strip().upper()


def locale(value: object, field: str = "locale") -> str:
    if isinstance(value, str):
        refuse_control(value, field)
    if not isinstance(value, str) or value.strip().lower() not in LOCALES:
        raise ValidationError(field, f"must be one of {', '.join(LOCALES)}")
    return value.strip().lower()


def emails(values: object, field: str = "email") -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValidationError(field, "must be a list of addresses")
    # Imported on first use (about 40 ms): a read command never validates an address.
    from email_validator import EmailNotValidError, validate_email

    if len(values) > MAX_EMAILS:
        raise ValidationError(field, f"at most {MAX_EMAILS} addresses")
    result: list[str] = []
    for raw in values:
        if not isinstance(raw, str):
            raise ValidationError(field, "must be a list of addresses")
        refuse_control(raw, field)
        refuse_pan(raw, field)
        try:
            normalized = validate_email(raw.strip(), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValidationError(field, f"{raw[:80]!r} is not a valid address ({exc})") from None
        if normalized not in result:
            result.append(normalized)
    return result


def refuse_pan(value: str, field: str) -> str:
    """For tokens, nonces and identifiers: a card number is refused and never echoed.

    Raises ValidationError naming `field`; returns `value` unchanged otherwise."""
    if contains_pan(value):
        raise ValidationError(field, "looks like a card number; send a PSP token or nonce instead")
    return value
