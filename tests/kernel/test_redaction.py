"""Card numbers never reach storage or logs: redaction of free text, refusal of tokens."""

from __future__ import annotations

import re

import pytest

from worker.kernel.errors import ValidationError
from worker.kernel.redaction import REDACTED, luhn_valid, redact
from worker.kernel.validation import refuse_pan

# Well-known PSP test numbers (all Luhn-valid), in the shapes people paste them.
TEST_CARDS = [
    "4111111111111111",  # Visa
    "4242 4242 4242 4242",  # Visa (Stripe), grouped by spaces
    "5555-5555-5555-4444",  # Mastercard, grouped by dashes
    "5105105105105100",  # Mastercard
    "378282246310005",  # Amex, 15 digits
    "3782 822463 10005",  # Amex, as printed
    "371449635398431",  # Amex
    "6011111111111117",  # Discover
    "6011 0009 9013 9424",  # Discover
    "4000056655665556",  # Visa debit
    "3056930009020004",  # Diners, 16
    "30569309025904",  # Diners, 14
    "3566002020360505",  # JCB
    "4222222222222",  # Visa, 13 digits
    "6200000000000005",  # UnionPay
    "6205500000000000004",  # UnionPay, 19 digits
]


@pytest.mark.parametrize("card", TEST_CARDS)
def test_test_cards_are_luhn_valid(card: str) -> None:
    assert luhn_valid(re.sub(r"\D", "", card))


@pytest.mark.parametrize("card", TEST_CARDS)
def test_card_numbers_in_free_text_are_redacted(card: str) -> None:
    text = f"goodwill credit, customer read out {card} on the phone"
    result = redact(text)
    assert result == f"goodwill credit, customer read out {REDACTED} on the phone"
    digits = re.sub(r"\D", "", card)
    assert digits not in re.sub(r"\D", "", result or "")


@pytest.mark.parametrize("card", ["4111111111111111", "4242 4242 4242 4242"])
@pytest.mark.parametrize(
    "template", ["{}", "pan={}", "({})", "{}.", "card:{};", "x\n{}\ny", "a_{}_b"]
)
def test_card_numbers_are_redacted_at_any_position(card: str, template: str) -> None:
    result = redact(template.format(card))
    assert result == template.format(REDACTED)


def test_several_cards_in_one_text_are_all_redacted() -> None:
    text = "old 4111111111111111, new 5555-5555-5555-4444, amex 378282246310005"
    assert redact(text) == f"old {REDACTED}, new {REDACTED}, amex {REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # 16 digits, Luhn check fails
        "1234567812345678",  # 16 digits, Luhn check fails
        "4242 4242 4242 4241",
        "invoice 12345678 for 5.70 EUR",
        "79927398713",  # Luhn-valid but only 11 digits
        "123456789012",  # 12 digits
        "phone +44 20 7946 0958",
        "2026-11-21 10:00",
        "order 42, 0.0057 per message, 1000 messages",
        "41111111111111111111",  # 20 digits: too long to be a PAN
        "",
    ],
)
def test_non_card_numbers_are_kept(text: str) -> None:
    assert redact(text) == text


def test_redact_none_is_none() -> None:
    assert redact(None) is None


@pytest.mark.parametrize(
    "text",
    [
        "card 4111111111111111 2 times",
        "card 4111 1111 1111 1111 12/26",
        "card 4242-4242-4242-4242-123",
    ],
)
def test_card_followed_by_a_short_number_is_still_redacted(text: str) -> None:
    # A card number next to another short number must not hide inside a longer non-Luhn run.
    result = redact(text) or ""
    assert REDACTED in result
    assert "4111" not in result and "4242" not in result


@pytest.mark.parametrize(
    "text",
    ["4111\u00a01111\u00a01111\u00a01111", "4111\t1111\t1111\t1111", "4111  1111  1111  1111"],
    ids=["no-break-space", "tab", "double-space"],
)
def test_card_grouped_by_other_whitespace_is_redacted(text: str) -> None:
    result = redact(f"card {text} ok") or ""
    assert result == f"card {REDACTED} ok"


@pytest.mark.parametrize("card", TEST_CARDS)
def test_refuse_pan_refuses_without_echo(card: str) -> None:
    for value in (card, f"tok_{card}", f"fake-valid-nonce:{card}"):
        with pytest.raises(ValidationError) as info:
            refuse_pan(value, "nonce")
        error = info.value
        assert error.field == "nonce"
        assert str(error).startswith("nonce: ")
        rendered = " ".join([str(error), repr(error), error.message, str(error.as_dict())])
        digits = re.sub(r"\D", "", card)
        assert digits not in re.sub(r"\D", "", rendered)
        assert card not in rendered
        assert digits[-4:] not in rendered  # not even the last four


@pytest.mark.parametrize(
    "value",
    [
        "fake-valid-nonce",
        "fake-valid-visa-nonce:alice",
        "tokencc_bc_4111",
        "4111111111111112",
        "pm_1234567812345678",
    ],
)
def test_refuse_pan_passes_tokens_through(value: str) -> None:
    assert refuse_pan(value, "nonce") == value
