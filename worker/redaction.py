"""Card numbers never enter storage or logs (PCI): detect and redact PAN-like values."""

from __future__ import annotations

import re

from worker.errors import ValidationError

REDACTED = "[REDACTED]"
# 13-19 digits, optionally grouped by single spaces or dashes.
_PAN_CANDIDATE = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _is_pan(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def redact(text: str | None) -> str | None:
    """Replace every Luhn-valid 13-19 digit run (spaces/dashes allowed) with [REDACTED]."""
    if text is None:
        return None
    return _PAN_CANDIDATE.sub(lambda m: REDACTED if _is_pan(m.group(0)) else m.group(0), text)


def refuse_pan(value: str, field: str) -> str:
    """For tokens and nonces: a card number is refused outright and never echoed."""
    if any(_is_pan(m.group(0)) for m in _PAN_CANDIDATE.finditer(value)):
        raise ValidationError(field, "looks like a card number; send a PSP token or nonce instead")
    return value
