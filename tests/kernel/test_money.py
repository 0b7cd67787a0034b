"""Exact money: parsing decimal strings, formatting, minor units, micro-units, float trap."""

from __future__ import annotations

import decimal
import threading
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import worker  # noqa: F401  (importing the package traps FloatOperation)
from worker.kernel.errors import ValidationError
from worker.kernel.money import (
    ROUNDING,
    exponent,
    format_amount,
    from_micros,
    parse_amount,
    to_micros,
    to_minor_units,
)

# --- parse_amount --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "1e400",
        "1E2",
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "-Infinity",
        "inf",
        "1.1234567",
        "0.0000001",
        "",
        "   ",
        "\t\n",
        "+5",
        "5.",
        ".5",
        "1,5",
        "5 EUR",
        "0x10",
        "1_000",
        "123456789012345",  # 15 integer digits: NUMERIC(20,6) holds 14
    ],
)
def test_parse_amount_refuses_non_decimal_strings(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount(value, "amount")
    assert info.value.field == "amount"
    assert str(info.value).startswith("amount: ")


@pytest.mark.parametrize("value", [0.1, 5, 5.0, True, False, None, Decimal("5"), b"5", ["5"]])
def test_parse_amount_refuses_anything_but_str(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount(value, "price")
    assert info.value.field == "price"
    assert str(info.value).startswith("price: ")
    assert "decimal string" in info.value.message


def test_parse_amount_names_the_field_it_was_given() -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount("abc", "auto_reload_threshold")
    assert info.value.field == "auto_reload_threshold"
    assert info.value.code == "invalid"
    assert info.value.as_dict() == {
        "code": "invalid",
        "field": "auto_reload_threshold",
        "message": str(info.value),
    }


def test_more_than_six_decimals_says_so() -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount("1.1234567")
    assert "6 decimal places" in info.value.message


def test_parse_amount_does_not_echo_a_huge_input() -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount("x" * 10_000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("value", ["0", "0.0", "0.000000", "-0"])
def test_zero_is_refused_unless_allowed(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount(value, "amount", allow_negative=True)
    assert info.value.field == "amount"
    assert parse_amount(value, "amount", allow_zero=True, allow_negative=True) == 0


@pytest.mark.parametrize("value", ["-1", "-0.000001", "-5.7"])
def test_negative_is_refused_unless_allowed(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount(value, "amount")
    assert info.value.field == "amount"
    assert "positive" in info.value.message
    assert parse_amount(value, "amount", allow_negative=True) == Decimal(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5.7", Decimal("5.7")),
        ("5.70", Decimal("5.70")),
        ("0.000001", Decimal("0.000001")),
        ("0.0057", Decimal("0.0057")),
        ("99999999999999.999999", Decimal("99999999999999.999999")),
        ("1", Decimal("1")),
    ],
)
def test_parse_amount_accepts_decimal_strings_exactly(value: str, expected: Decimal) -> None:
    parsed = parse_amount(value)
    assert isinstance(parsed, Decimal)
    assert parsed == expected
    assert str(parsed) == value.strip()  # no rounding, no re-scaling


@pytest.mark.parametrize("value", ["٥", "５.７", "१०"])
def test_parse_amount_refuses_non_ascii_digits(value: str) -> None:
    # Python's \d matches any Unicode digit; money takes ASCII 0-9 only (CONTRACT.md).
    with pytest.raises(ValidationError) as info:
        parse_amount(value, "amount")
    assert info.value.field == "amount"


# --- format_amount -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("5.7", "EUR", "5.70"),
        ("5", "EUR", "5.00"),
        ("0.0057", "EUR", "0.0057"),
        ("0.000001", "EUR", "0.000001"),
        ("-5", "EUR", "-5.00"),
        ("0", "EUR", "0.00"),
        ("-0", "EUR", "0.00"),
        ("-0.000000", "EUR", "0.00"),
        ("1500", "JPY", "1500"),
        ("1500.5", "JPY", "1500.5"),
        ("1.5", "KWD", "1.500"),
        ("5.700000", None, "5.7"),
        ("5", None, "5"),
        ("1E+3", "EUR", "1000.00"),
        ("99999999999999.999999", "EUR", "99999999999999.999999"),
    ],
)
def test_format_amount(amount: str, currency: str | None, expected: str) -> None:
    text = format_amount(Decimal(amount), currency)
    assert text == expected
    assert "E" not in text and "e" not in text
    assert Decimal(text) == Decimal(amount)
    # What we print is accepted back by the parser (amounts travel as strings).
    if Decimal(amount) != 0:
        assert parse_amount(text, allow_negative=True) == Decimal(amount)


# --- to_minor_units: the one rounding place ------------------------------------------------------


def test_rounding_mode_is_named_half_even() -> None:
    assert ROUNDING == decimal.ROUND_HALF_EVEN


@pytest.mark.parametrize(
    ("currency", "exp"), [("EUR", 2), ("USD", 2), ("GBP", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3)]
)
def test_exponents(currency: str, exp: int) -> None:
    assert exponent(currency) == exp


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("5.7", "EUR", 570),
        ("0.01", "EUR", 1),
        ("1999.99", "EUR", 199999),
        ("0.125", "EUR", 12),  # half-even: down to the even neighbour
        ("0.135", "EUR", 14),  # half-even: up to the even neighbour
        ("0.125001", "EUR", 13),  # above the half: up
        ("0.004999", "EUR", 0),
        ("-0.125", "EUR", -12),
        ("1500", "JPY", 1500),
        ("2.5", "JPY", 2),
        ("3.5", "JPY", 4),
        ("1.234", "KWD", 1234),
        ("1.0005", "KWD", 1000),
        ("1.0015", "KWD", 1002),
    ],
)
def test_to_minor_units(amount: str, currency: str, expected: int) -> None:
    result = to_minor_units(Decimal(amount), currency)
    assert type(result) is int
    assert result == expected


# --- micro-units (SQLite storage) ----------------------------------------------------------------


@given(
    st.decimals(
        min_value=Decimal("-99999999999999.999999"),
        max_value=Decimal("99999999999999.999999"),
        places=6,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_micros_roundtrip(amount: Decimal) -> None:
    micros = to_micros(amount)
    assert type(micros) is int
    assert from_micros(micros) == amount
    assert micros == int(amount * 1_000_000)


@given(st.integers(min_value=-(10**20), max_value=10**20))
def test_micros_roundtrip_from_int(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros


def test_micros_examples() -> None:
    assert to_micros(Decimal("0.0057")) == 5700
    assert to_micros(Decimal("5.7")) == 5_700_000
    assert to_micros(Decimal("-1")) == -1_000_000
    assert from_micros(5700) == Decimal("0.0057")
    assert sum(from_micros(5700) for _ in range(1000)) == Decimal("5.7")


def test_to_micros_refuses_to_round() -> None:
    with pytest.raises(ValueError):
        to_micros(Decimal("0.0000001"))


# --- floats are trapped --------------------------------------------------------------------------


def test_float_mixing_is_trapped_after_import_worker() -> None:
    assert decimal.getcontext().traps[decimal.FloatOperation]
    assert decimal.DefaultContext.traps[decimal.FloatOperation]
    with pytest.raises(decimal.FloatOperation):
        _ = Decimal("1") < 0.5
    # Constructing a Decimal from a float is trapped too (only from_float is explicit).
    a_float = 0.1
    with pytest.raises(decimal.FloatOperation):
        Decimal(a_float)
    with pytest.raises(decimal.FloatOperation):
        decimal.getcontext().create_decimal(a_float)
    # Arithmetic with a float is always a TypeError in Python.
    with pytest.raises(TypeError):
        _ = Decimal("1") + 0.1  # type: ignore[operator]
    # Equality stays silent (it is how Python defines it).
    assert Decimal("1") == 1.0


def test_float_trap_applies_in_new_threads() -> None:
    outcome: list[str] = []

    def body() -> None:
        a_float = 0.1
        try:
            Decimal(a_float)
        except decimal.FloatOperation:
            outcome.append("trapped")
        else:
            outcome.append("silent")

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert outcome == ["trapped"]
