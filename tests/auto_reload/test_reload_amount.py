from decimal import Decimal

import pytest

from worker.auto_reload.plan import reload_amount


@pytest.mark.parametrize(
    ("balance", "threshold", "amount", "expected"),
    [
        ("0", "10", "20", "20"),  # one step clears it
        ("0", "10", "4", "12"),  # 3 x 4 = 12 > 10 (two steps would land on 8)
        ("0", "10", "5", "15"),  # 2 x 5 = 10 is not above 10: three steps
        ("9.99", "10", "0.01", "0.02"),
        ("-0.0057", "0", "1", "1"),  # below zero never happens, but the rule still holds
        ("0.0057", "100", "0.01", "100.00"),
    ],
)
def test_smallest_multiple_that_lands_strictly_above_the_threshold(
    balance: str, threshold: str, amount: str, expected: str
) -> None:
    got = reload_amount(Decimal(balance), Decimal(threshold), Decimal(amount))
    assert got == Decimal(expected)
    assert Decimal(balance) + got > Decimal(threshold)
    assert Decimal(balance) + got - Decimal(amount) <= Decimal(threshold)
