"""Card numbers with other separators, other scripts of digits and line breaks are found too
(issue fixred, point 1); amounts, dates, IBANs and phone numbers are not taken for cards."""

from __future__ import annotations

import pytest

from worker.kernel.errors import ValidationError
from worker.kernel.redaction import REDACTED, contains_pan, redact
from worker.kernel.validation import refuse_pan, text

DISGUISED = [
    "4111.1111.1111.1111",
    "4111/1111/1111/1111",
    "4111_1111_1111_1111",
    "4111 - 1111 - 1111 - 1111",
    "4111 1111 1111 1111".translate({c: c + 0xFEE0 for c in range(48, 58)}),  # full-width
    "4111 1111\n1111 1111",
    "4111\r\n1111\r\n1111\r\n1111",
    "\u0664\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661",
    "4111\u20131111\u20131111\u20131111",
    "3782.822463.10005",
    # Separators mixed, groups laid out as a card prints them:
    "4111.1111 1111.1111",
    "4111/1111 1111_1111",
    "3782 822463.10005",
    "6011.0009 9013.9424",
    "5555.5555 5555.4444",
    "2223.0000 4841.0010",
    # Invisible characters a copy-paste carries, IME and typographic separators, lists and
    # encodings (hostile test, 2026-11-30):
    "4111\u200b1111\u200b1111\u200b1111",  # zero-width space
    "4111\u00ad1111\u00ad1111\u00ad1111",  # soft hyphen
    "5555\u200e5555\u200e5555\u200e4444",  # left-to-right mark
    "4111\u20601111\u20601111\u20601111",  # word joiner
    "\uff14\uff11\uff11\uff11\u30fc\uff11\uff11\uff11\uff11\u30fc\uff11\uff11\uff11\uff11\u30fc\uff11\uff11\uff11\uff11",
    "4111\u30fb1111\u30fb1111\u30fb1111",  # katakana middle dot
    "4111\u20221111\u20221111\u20221111",  # bullet
    "4111, 1111, 1111, 1111",
    "6200\uff0c0000\uff0c0000\uff0c0005",  # full-width comma
    "4111+1111+1111+1111",
    "4111%201111%201111%201111",
    "4111...1111...1111...1111",
    "4111 - - 1111 - - 1111 - - 1111",
]


@pytest.mark.parametrize("card", DISGUISED)
def test_disguised_card_in_free_text_is_redacted(card: str) -> None:
    assert redact(f"note: {card} thanks") == f"note: {REDACTED} thanks"
    assert text(f"note: {card}", "reason", max_length=500) == f"note: {REDACTED}"


@pytest.mark.parametrize("card", DISGUISED)
def test_disguised_card_as_identifier_is_refused_without_echo(card: str) -> None:
    assert contains_pan(card)
    with pytest.raises(ValidationError) as info:
        refuse_pan(card, "holder")
    assert info.value.field == "holder"
    assert "1111" not in str(info.value.as_dict()) and "\uff11" not in str(info.value.as_dict())


@pytest.mark.parametrize(
    "kept",
    [
        "1234.56",
        "2026.11.30",
        "paid 1234.03 2026.11.30",  # amount then date: 14 Luhn-valid digits if joined
        "10.00 20.00 30.00 40.00",  # four amounts: 16 Luhn-valid digits if joined
        "2026/11/30 1234.56",
        "DE62 3704 0044 0532 0130 01",  # valid IBAN whose digits hold a Luhn-valid span
        "DE62370400440532013001",
        "GB82 WEST 1234 5698 7654 32",
        "+44 7911 123456",
        "+14155552671",
        "+33.1.23.45.67.89",
        "1234.5678 9010 05",  # mixed separators, not a card's layout (Luhn-valid if joined)
        "paid 2026.11.30 1234.56 EUR",
        # A card's 4-4-4-4 layout with mixed separators, Luhn-valid if joined, but no card
        # scheme starts so (seasons, opening hours, references, four-decimal amounts):
        "seasons 2021/2022 2022/2023",
        "open 0600/1200 0600/1200",
        "refs 2025/0001 2025/0003",
        "1445.4152 9357.3425",
        # Luhn-valid spans once joined, but dates, our invoice numbers, creditor references,
        # telephone numbers, IBANs in lower case or grouped by dashes, lists:
        "Subscription 2024-12-01 - 2024-12-31",
        "PF-2026-000001 2026-01-03",
        "RF18 5390 0754 7034",
        "+86 152 3648 4124",
        "de84 3416 7211 0684 0388 54",
        "DE46-3982-5979-1907-4833-78",
        "items 120, 340, 560, 780, 905",  # commas join only a card's layout
    ],
)
def test_amounts_dates_ibans_and_phones_are_kept(kept: str) -> None:
    assert redact(kept) == kept
    assert not contains_pan(kept)


def test_an_invalid_iban_shape_does_not_hide_a_card() -> None:
    # "DE00" + card: IBAN-shaped but mod-97 invalid, so the card number is still found.
    redacted = redact("DE00 4111 1111 1111 1111") or ""
    assert REDACTED in redacted and "1111" not in redacted
    assert contains_pan("DE00 4111 1111 1111 1111")
