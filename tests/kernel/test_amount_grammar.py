"""The amount grammar is exact everywhere (issue 11, item 1; CONTRACT.md "Formats").

`-?` then 1-14 ASCII digits, optionally `.` and 1-6 more (`worker.money.AMOUNT_RE`): white
space around the digits, a newline, a tab, a non-ASCII digit or anything else outside it is
refused naming the field, never trimmed. Here the parser and the settings that hold amounts;
the CLI and the tasks are in tests/kernel/test_amount_grammar_integration.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from config import SettingsError, get_settings, reset_settings
from worker.kernel.errors import ValidationError
from worker.kernel.money import parse_amount

# Each a near miss of a valid amount: surrounding white space of every kind, a newline at
# the end (which `$` would let through), non-ASCII digits (which `\d` would let through).
NEAR_MISSES = [
    " 5",
    "5 ",
    " 5.7 ",
    "5\n",
    "\n5",
    "5\r\n",
    "\t5",
    "5\t",
    "5\x00",
    "\u00a05",
    "5\u2003",
    "5\u3000",
    "\ufeff5",
    "- 5",
    "5 .5",
    "-5\n",
    "\u0665",
    "1\u0660",
    "\uff15.\uff17",
    "\u0967\u0966",
    "5\u200b",
]


@pytest.mark.parametrize("value", NEAR_MISSES)
def test_parse_amount_refuses_anything_outside_the_grammar(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount(value, "amount", allow_negative=True)
    assert info.value.field == "amount"
    assert str(info.value).startswith("amount: ")


@pytest.mark.parametrize("value", [" 5", "5 ", "5\n", "\t5"])
def test_white_space_is_named_in_the_refusal(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount(value, "threshold")
    assert info.value.field == "threshold"
    assert "white space" in info.value.message


@pytest.mark.parametrize("value", ["5", "-5", "0.000001", "99999999999999.999999"])
def test_the_same_amounts_without_white_space_still_parse(value: str) -> None:
    assert parse_amount(value, "amount", allow_negative=True) == Decimal(value)


# --- settings that hold amounts --------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def _refused(env: pytest.MonkeyPatch, name: str, value: str) -> str:
    env.setenv(name, value)
    reset_settings()
    with pytest.raises(SettingsError) as info:
        get_settings()
    message = str(info.value)
    assert message.startswith(f"{name}:"), message
    assert "\n" not in message
    return message


AMOUNT_SETTINGS = [
    ("DEPLETION_FLOOR", "1"),
    ("AUTO_RELOAD_MAX_AMOUNT_PER_MONTH", "500"),
    ("PSP_STUB_TIMEOUT_RATE", "0.5"),
    ("PSP_STUB_TIMEOUT_AMOUNTS", "77.00"),
]


@pytest.mark.parametrize(("name", "good"), AMOUNT_SETTINGS)
@pytest.mark.parametrize("bad", [" {}", "{} ", "{}\n", "\t{}", "{}\r\n"])
def test_amount_settings_refuse_white_space(
    env: pytest.MonkeyPatch, name: str, good: str, bad: str
) -> None:
    _refused(env, name, bad.format(good))
    env.setenv(name, good)  # the same value, exact, is fine: the refusal was the white space
    reset_settings()
    get_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEPLETION_FLOOR", "\u0661"),
        ("AUTO_RELOAD_MAX_AMOUNT_PER_MONTH", "\uff11\uff10\uff10"),
        ("PSP_STUB_TIMEOUT_RATE", "0.\u0665"),
        ("PSP_STUB_TIMEOUT_AMOUNTS", "77.00,\u0664\u0662.00"),
        ("USD_DISPLAY_RATES", "EUR=\u0661.08"),
    ],
)
def test_amount_settings_refuse_non_ascii_digits(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    _refused(env, name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PSP_STUB_TIMEOUT_AMOUNTS", "77.00, 42.00"),
        ("PSP_STUB_TIMEOUT_AMOUNTS", "77.00 ,42.00"),
        ("PSP_STUB_TIMEOUT_AMOUNTS", "77.00,42.00\n"),
        ("USD_DISPLAY_RATES", "EUR=1.0862, GBP=1.2710"),
        ("USD_DISPLAY_RATES", "EUR= 1.0862"),
        ("USD_DISPLAY_RATES", "EUR =1.0862"),
        ("USD_DISPLAY_RATES", "EUR=1.0862\n"),
    ],
)
def test_lists_of_amounts_are_exact_too(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    _refused(env, name, value)


def test_lists_of_amounts_parse_exactly(env: pytest.MonkeyPatch) -> None:
    env.setenv("PSP_STUB_TIMEOUT_AMOUNTS", "77.00,42.00")
    env.setenv("USD_DISPLAY_RATES", "EUR=1.0862,GBP=1.2710")
    reset_settings()
    settings = get_settings()
    assert settings.psp_stub_timeout_amounts == (Decimal("77.00"), Decimal("42.00"))
    assert settings.usd_display_rates == {"EUR": Decimal("1.0862"), "GBP": Decimal("1.2710")}
