"""Card numbers never enter storage or logs (PCI): detect and redact PAN-like values.

A PAN-like value is 13-19 digits passing Luhn. Digits of any script count (full-width
"４１１１" is a card number too: `unicodedata.decimal` maps each one). Digit groups may be
joined by any run of white space (line breaks included) and/or one or two of '-', '.', '/',
'_' (and their Unicode look-alikes: dashes, full-width forms), so "4111.1111.1111.1111",
"4111 - 1111 - 1111 - 1111" and a number broken over two lines are all found. Detection
looks at every run of digit groups and at every contiguous span of whole groups inside it, so
"4111 1111 1111 1111 12/26" still loses the card number.

False positives guarded (issue "fixred"): a span joined by '.', '/' or '_' must use that same
separator throughout, or have its groups laid out as a card prints them (4-4-4-4, 4-6-5...)
and start with a major scheme's issuer number (Visa 4, Mastercard 51-55...), so decimal
amounts, dates, seasons and opening hours side by side ("1234.56 2026.11.30",
"10.00 20.00 30.00 40.00", "2021/2022 2022/2023") are never read as one number; a valid
IBAN (python-stdnum, country format and mod-97) is bank data, not a card, and is left
alone; phone numbers and single amounts or dates have fewer than 13 digits.
"""

from __future__ import annotations

import re
import unicodedata

REDACTED = "[REDACTED]"
_DASHES = "\\-\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d"
_DOTS = ".\u2024\ufe52\uff0e"
_SLASHES = "/\u2215\uff0f"
_UNDERSCORES = "_\uff3f"
_PUNCT = f"[{_DASHES}{_DOTS}{_SLASHES}{_UNDERSCORES}]"
# Groups are joined by any white space, or one or two punctuation marks with any white space
# around them ("4111 - 1111", "4111--1111", "4111.\n1111").
_GAP = rf"(?:\s+(?:{_PUNCT}{{1,2}}\s*)?|{_PUNCT}{{1,2}}\s*)"
# Free text: any digit run, even glued to letters ("visa4111...") - better too much redacted.
_RUN_TEXT = re.compile(rf"(?<!\d)\d+(?:{_GAP}\d+)*(?!\d)")
# Identifiers: a run glued to letters is part of an id ("acc_3406137074114c0e..."), not a
# card; refusing it would refuse legitimate generated ids.
_RUN_ID = re.compile(rf"(?<![^\W_])\d+(?:{_GAP}\d+)*(?![^\W_])")
_SEP = re.compile(rf"({_GAP})")
# Which punctuation a separator carries, by kind: look-alikes count as their ASCII mark.
_KIND = {c: "-" for c in _DASHES.replace("\\", "")}
_KIND.update({c: "." for c in _DOTS})
_KIND.update({c: "/" for c in _SLASHES})
_KIND.update({c: "_" for c in _UNDERSCORES})
# IBAN-shaped words (letters, check digits, groups of up to four): checked with stdnum.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?")


def _digits(text: str) -> str:
    """ASCII digits of `text`'s decimal digits, any script (full-width, Arabic-Indic...)."""
    if text.isascii() and text.isdigit():
        return text
    return "".join(str(unicodedata.decimal(c)) for c in text if c.isdecimal())


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(_digits(digits))):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _kind(sep: str) -> str:
    return "".join(_KIND.get(c, "") for c in sep)


# How card schemes print their numbers (ISO/IEC 7812 lengths): 4-4-4-4 (Visa, Mastercard,
# Discover...), 4-4-4-4-3 (19 digits), 4-6-5 (American Express), 4-6-4 (Diners Club).
_CARD_LAYOUTS = {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)}
# Issuer identification number ranges of the major schemes (first digits, inclusive ranges
# by prefix length): Visa 4; Mastercard 51-55 and 2221-2720; American Express 34, 37; Diners
# Club 300-305, 36, 38; Discover 6011, 644-649, 65; UnionPay 62; JCB 3528-3589.
_IIN_RANGES = (
    (1, 4, 4),
    (2, 51, 55),
    (4, 2221, 2720),
    (2, 34, 34),
    (2, 37, 37),
    (3, 300, 305),
    (2, 36, 36),
    (2, 38, 38),
    (4, 6011, 6011),
    (3, 644, 649),
    (2, 65, 65),
    (2, 62, 62),
    (4, 3528, 3589),
)


def _scheme_prefix(number: str) -> bool:
    """Whether `number` (ASCII digits) starts as a major scheme's card number does."""
    return any(low <= int(number[:size]) <= high for size, low, high in _IIN_RANGES)


def _one_number(kinds: set[str], lengths: tuple[int, ...], number: str) -> bool:
    """Separators that can join one number: '.', '/' and '_' only when the whole span uses
    the same one (amounts and dates next to each other are not a card), or when the groups
    are laid out as a card is printed and the digits start as a card number does
    ("4111.1111 1111.1111"; "2021/2022 2022/2023" and "1234.5678 9012.3456" are not);
    white space and dashes mix freely (people type "4111 1111-1111 1111")."""
    if len(kinds) <= 1 or not any(set(k) & {".", "/", "_"} for k in kinds):
        return True
    return lengths in _CARD_LAYOUTS and _scheme_prefix(number)


def _pan_groups(groups: list[str], seps: list[str]) -> list[bool]:
    """Which digit groups belong to some 13-19 digit Luhn-valid span of whole groups."""
    marked = [False] * len(groups)
    digits = [_digits(g) for g in groups]
    kinds = [_kind(s) for s in seps]
    for start in range(len(groups)):
        number = ""
        span_kinds: set[str] = set()
        for end in range(start, len(groups)):
            if end > start:
                span_kinds.add(kinds[end - 1])
            number += digits[end]
            if len(number) > 19:
                break
            if (
                len(number) >= 13
                and _one_number(span_kinds, tuple(len(d) for d in digits[start : end + 1]), number)
                and luhn_valid(number)
            ):
                for i in range(start, end + 1):
                    marked[i] = True
    return marked


def _split(run: str) -> tuple[list[str], list[str]]:
    parts = _SEP.split(run)
    return parts[0::2], parts[1::2]


def _redact_run(run: str) -> str:
    groups, seps = _split(run)
    marked = _pan_groups(groups, seps)
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


def _ibans(text: str) -> list[tuple[int, int]]:
    """Spans of valid IBANs in `text` (bank account numbers are not card numbers)."""
    spans: list[tuple[int, int]] = []
    for match in _IBAN.finditer(text):
        # Imported on first IBAN-shaped word only (about 50 ms, with its registry).
        from stdnum import iban

        if iban.is_valid(match.group(0)):
            spans.append(match.span())
    return spans


def contains_pan(text: str) -> bool:
    """A card number standing on its own inside an identifier, token or nonce."""
    for start, end in reversed(_ibans(text)):
        text = text[:start] + "~" + text[end:]
    return any(any(_pan_groups(*_split(m.group(0)))) for m in _RUN_ID.finditer(text))


def _redact_plain(text: str) -> str:
    return _RUN_TEXT.sub(lambda m: _redact_run(m.group(0)), text)


def redact(text: str | None) -> str | None:
    """Replace every PAN-like value in free text with [REDACTED]."""
    if text is None:
        return None
    out: list[str] = []
    last = 0
    for start, end in _ibans(text):
        out.append(_redact_plain(text[last:start]))
        out.append(text[start:end])
        last = end
    out.append(_redact_plain(text[last:]))
    return "".join(out)


# Celery cuts a long argument's repr with "...": a card number cut there is no longer
# Luhn-valid, yet still shows its first digits.
_CUT_RUN = re.compile(rf"(?<!\d)\d+(?:{_GAP}\d+)*(?=\.\.\.)")
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
