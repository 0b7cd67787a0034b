"""Field checks shared by services: each raises ValidationError naming the field.

Control characters (issue 11): an identifier, key, reference, code or address holding a
C0 control (U+0000-U+001F), DEL, a C1 control (U+0080-U+009F) or an unpaired surrogate is
refused naming the field, before any query (PostgreSQL refuses NUL in text and UTF-8 cannot
encode a lone surrogate: either would otherwise surface as a database error). Free text
(names, descriptions, reasons) is cleaned instead: see `text`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from functools import lru_cache

from babel import Locale
from email_validator import EmailNotValidError, validate_email

from worker.errors import ValidationError
from worker.money import is_currency
from worker.redaction import redact, refuse_pan

LOCALES = ("en", "ja", "zh")
MAX_EMAILS = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Free text keeps tab and line feed (a description may be several lines); every other
# character `_CONTROL` matches is removed.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def refuse_control(value: str, field: str) -> str:
    """`value` unchanged, or ValidationError naming `field` and the first offending code point
    (a control character or an unpaired surrogate; see the module docstring)."""
    found = _CONTROL.search(value)
    if found is not None:
        char = found.group(0)
        kind = "an unpaired surrogate" if 0xD800 <= ord(char) <= 0xDFFF else "a control character"
        raise ValidationError(field, f"contains {kind} (U+{ord(char):04X})")
    return value


def identifier(value: object, field: str) -> str:
    """An id a caller names (account, payment method): a non-empty string without control
    characters, surrounding spaces trimmed. Raises ValidationError naming `field`."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required")
    return refuse_control(value, field).strip()


def clean_text(value: str) -> str:
    """Free text without control characters: C0 controls other than tab and line feed, DEL,
    C1 controls and unpaired surrogates are removed (a CR LF line end becomes LF)."""
    return _CONTROL_IN_TEXT.sub("", value)


def check_arguments(arguments: Mapping[str, object], *, free_text: Collection[str] = ()) -> None:
    """The task boundary: every string in every argument (inside lists and objects too, keys
    included) is free of control characters, or ValidationError names the argument. Free-text
    arguments are left to `text`, which cleans them. Runs before any query."""
    for name, value in arguments.items():
        if name in free_text:
            continue
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                refuse_control(item, name)
            elif isinstance(item, list | tuple):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    return frozenset(
        c for c in Locale("en").territories if isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c)
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
