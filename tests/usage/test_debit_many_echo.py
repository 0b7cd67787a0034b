"""debit_many results echo the caller's keys safely (issue fixred, points 2 and 3): a card
number or a control character is never echoed; a debit refused for a bad field still
carries its valid account_id and reference, so callers match results by reference."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.usage.test_debit_many import d, many
from tests.usage.test_usage import account_row, funded

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "account_id",
    ["4111111111111111", "4111.1111.1111.1111", "acct 4242 4242 4242 4242", "x" * 300],
)
def test_an_unknown_account_id_holding_a_card_number_is_not_echoed(account_id: str) -> None:
    [result] = many([d(account_id, "1", "r-1")])["results"]
    assert result["status"] == "refused" and result["error"]["field"] == "account_id"
    assert result["account_id"] is None
    assert result["reference"] == "r-1"
    assert "1111" not in repr(result) and "4242" not in repr(result)


def test_an_unknown_plain_account_id_is_still_echoed() -> None:
    [result] = many([d("acc_nope", "1", "r-1")])["results"]
    assert (result["account_id"], result["reference"]) == ("acc_nope", "r-1")


@pytest.mark.parametrize("amount", [" 5", "1e3", "-5", "0", 5, 0.5, None, "x"])
def test_a_debit_refused_for_its_amount_echoes_account_and_reference(amount: Any) -> None:
    a = funded("10")
    [result] = many([d(a, amount, "match-me")])["results"]
    assert result["status"] == "refused" and result["error"]["field"] == "amount"
    assert (result["account_id"], result["reference"]) == (a, "match-me")
    assert account_row(a).balance == Decimal("10")


def test_invalid_keys_are_not_echoed_when_another_field_is_refused() -> None:
    a = funded("10")
    results = many(
        [
            d(a, "1e3", "4242 4242 4242 4242"),  # card number as reference
            d(a, "1e3", "line\nbreak"),  # control character
            d("acc\x00x", "1e3", "r-ok"),
            d(a, "1e3", 7),  # type: ignore[arg-type]
            {"amount": "1", "reference": ["r"]},
        ]
    )["results"]
    echoed = [(r["account_id"], r["reference"]) for r in results]
    assert echoed == [(a, None), (a, None), (None, "r-ok"), (a, None), (None, None)]
    assert "4242" not in repr(results)
