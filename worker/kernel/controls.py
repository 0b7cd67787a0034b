"""Control characters in input (issue 11): refused in identifiers, cleaned out of free text.

A control character is a C0 control (U+0000-U+001F), DEL, a C1 control (U+0080-U+009F) or
an unpaired surrogate (U+D800-U+DFFF). In an identifier, key, reference, code, address or
timestamp it is refused naming the field, before any query: PostgreSQL refuses NUL in text
and UTF-8 cannot encode a lone surrogate, so either would otherwise surface as a database
error. Free text (names, descriptions, reasons) is cleaned instead (`clean_text`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from worker.kernel.errors import ValidationError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Free text keeps tab and line feed (a description may be several lines); every other
# character `_CONTROL` matches is removed.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def refuse_control(value: str, field: str) -> str:
    """`value` unchanged, or ValidationError naming `field` and the first offending code point
    (a control character or an unpaired surrogate)."""
    found = _CONTROL.search(value)
    if found is not None:
        char = found.group(0)
        kind = "an unpaired surrogate" if 0xD800 <= ord(char) <= 0xDFFF else "a control character"
        raise ValidationError(field, f"contains {kind} (U+{ord(char):04X})")
    return value


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
