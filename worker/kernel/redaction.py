"""Card numbers never enter storage or logs (PCI): detect and redact PAN-like values.

A PAN-like value is 13-19 digits passing Luhn, optionally grouped by single spaces or
dashes (or other short white space). Detection looks at every run of digit groups and at
every contiguous span of whole groups inside it, so "4111 1111 1111 1111 12/26" still loses
the card number.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"
# Groups are joined by one or two separators: any non-newline white space (no-break space,
# tab, double space) or a dash.
_GAP = r"(?:[^\S\r\n]|-){1,2}"
# Free text: any digit run, even glued to letters ("visa4111...") - better too much redacted.
_RUN_TEXT = re.compile(rf"(?<![0-9])[0-9]+(?:{_GAP}[0-9]+)*(?![0-9])")
# Identifiers: a run glued to letters is part of an id ("acc_3406137074114c0e..."), not a
# card; refusing it would refuse legitimate generated ids.
_RUN_ID = re.compile(rf"(?<![0-9A-Za-z])[0-9]+(?:{_GAP}[0-9]+)*(?![0-9A-Za-z])")
_SEP = re.compile(rf"({_GAP})")


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


def _pan_groups(groups: list[str]) -> list[bool]:
    """Which digit groups belong to some 13-19 digit Luhn-valid span of whole groups."""
    marked = [False] * len(groups)
    for start in range(len(groups)):
        length = 0
        for end in range(start, len(groups)):
            length += len(groups[end])
            if length > 19:
                break
            if length >= 13 and luhn_valid("".join(groups[start : end + 1])):
                for i in range(start, end + 1):
                    marked[i] = True
    return marked


def _redact_run(run: str) -> str:
    parts = _SEP.split(run)
    groups, seps = parts[0::2], parts[1::2]
    marked = _pan_groups(groups)
    if not any(marked):
        return run
    out: list[str] = []
    for i, group in enumerate(groups):
        if marked[i]:
            if i == 0 or not marked[i - 1]:
                out.append(REDACTED)
        else:
            out.append(group)
        if i < len(seps) and not (marked[i] and marked[i + 1]):
            out.append(seps[i])
    return "".join(out)


def contains_pan(text: str) -> bool:
    """A card number standing on its own inside an identifier, token or nonce."""
    return any(any(_pan_groups(_SEP.split(m.group(0))[0::2])) for m in _RUN_ID.finditer(text))


def redact(text: str | None) -> str | None:
    """Replace every PAN-like value in free text with [REDACTED]."""
    if text is None:
        return None
    return _RUN_TEXT.sub(lambda m: _redact_run(m.group(0)), text)


# Celery cuts a long argument's repr with "...": a card number cut there is no longer
# Luhn-valid, yet still shows its first digits.
_CUT_RUN = re.compile(rf"(?<![0-9])[0-9]+(?:{_GAP}[0-9]+)*(?=\.\.\.)")
_CUT_KEEPS = 6  # digits a cut run may keep: no more than a card's issuer prefix (PCI DSS 3.4)


def redact_repr(text: str | None) -> str | None:
    """For Celery's `argsrepr`/`kwargsrepr` (message headers and monitoring events): `redact`,
    and a digit run of more than six digits cut short by the repr's "..." becomes [REDACTED]
    too (the card number may be what was cut)."""
    redacted = redact(text)
    if redacted is None:
        return None

    def cut(match: re.Match[str]) -> str:
        run = match.group(0)
        return REDACTED if sum(c.isdigit() for c in run) > _CUT_KEEPS else run

    return _CUT_RUN.sub(cut, redacted)
