"""The sandbox stubs' amount table and nonces match Braintree's sandbox."""

from __future__ import annotations

import pytest

from worker.kernel.errors import ValidationError
from worker.psp.base import Outcome
from worker.psp.sandbox import fingerprint, parse_nonce, sandbox_result


@pytest.mark.parametrize(
    ("amount_minor", "outcome", "code"),
    [
        (1, Outcome.SUCCEEDED, None),  # 0.01
        (1000, Outcome.SUCCEEDED, None),
        (199999, Outcome.SUCCEEDED, None),  # 1999.99
        (200000, Outcome.DECLINED, "2000"),  # 2000.00
        (200100, Outcome.DECLINED, "2001"),  # 2001.00 -> code = integer part
        (204699, Outcome.DECLINED, "2046"),
        (209900, Outcome.REQUIRES_ACTION, "2099"),  # 2099.00: 3-D Secure (issue 17)
        (209901, Outcome.DECLINED, "2099"),  # 2099.01: only the exact amount asks for it
        (299999, Outcome.DECLINED, "2999"),  # 2999.99
        (300000, Outcome.NOT_ATTEMPTED, "3000"),  # 3000.00 soft
        (300099, Outcome.NOT_ATTEMPTED, "3000"),  # 3000.99
        (300100, Outcome.SUCCEEDED, None),  # 3001.00: outside every special range
        (500100, Outcome.DECLINED, "gateway_rejected"),  # 5001.00
        (500101, Outcome.SUCCEEDED, None),  # 5001.01
        (999999, Outcome.SUCCEEDED, None),
    ],
)
def test_amount_table(amount_minor: int, outcome: Outcome, code: str | None) -> None:
    result, got_code, text = sandbox_result(amount_minor, "EUR")
    assert result is outcome
    assert got_code == code
    if outcome is not Outcome.SUCCEEDED:
        assert text


def test_decline_text_for_insufficient_funds() -> None:
    assert sandbox_result(200100, "EUR")[2] == "Insufficient Funds"


def test_zero_decimal_currency_uses_major_units() -> None:
    assert sandbox_result(2001, "JPY")[0] is Outcome.DECLINED
    assert sandbox_result(2001, "EUR")[0] is Outcome.SUCCEEDED  # 20.01 EUR


def test_tags_make_distinct_cards_and_the_same_tag_the_same_card() -> None:
    alice = parse_nonce("fake-valid-visa-nonce:alice")
    bob = parse_nonce("fake-valid-visa-nonce:bob")
    assert (alice.base, alice.tag) == ("fake-valid-visa-nonce", "alice")
    assert fingerprint("card", alice.base, alice.tag) != fingerprint("card", bob.base, bob.tag)
    again = parse_nonce("fake-valid-visa-nonce:alice")
    assert fingerprint("card", again.base, again.tag) == fingerprint("card", alice.base, alice.tag)


@pytest.mark.parametrize("pan", ["4111111111111111", "4111 1111 1111 1111", "5555-5555-5555-4444"])
def test_card_number_as_nonce_is_refused_without_echo(pan: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_nonce(pan)
    assert info.value.field == "nonce"
    assert pan not in str(info.value)
    assert pan.replace(" ", "").replace("-", "") not in str(info.value)
