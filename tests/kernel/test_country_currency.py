"""Countries are ISO 3166-1 assigned codes and currencies ISO 4217 currencies an account can
hold: CLDR groupings, placeholders and X-codes that are no currency are refused naming the
field (issue fixred, point 4)."""

from __future__ import annotations

import pytest

from worker.kernel import validation
from worker.kernel.errors import ValidationError


@pytest.mark.parametrize(
    "code",
    ["EU", "EZ", "UN", "QO", "ZZ", "XA", "XB", "AC", "CP", "CQ", "DG", "EA", "IC", "TA", "001"],
)
def test_placeholder_territories_are_not_countries(code: str) -> None:
    with pytest.raises(ValidationError) as info:
        validation.country(code)
    assert info.value.field == "country"


@pytest.mark.parametrize("code", ["GB", "us", "DE", "JP", "CN", "XK", "AQ", "FR", "SS", "BQ"])
def test_real_countries_are_kept(code: str) -> None:
    assert validation.country(code) == code.upper()


def test_the_country_list_is_the_iso_size() -> None:
    # 249 ISO 3166-1 alpha-2 assigned codes, plus XK (Kosovo), kept on purpose.
    assert len(validation._countries()) == 250


@pytest.mark.parametrize(
    "code",
    ["XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA",
     "xau", "XEU"],
)  # fmt: skip
@pytest.mark.parametrize("field", ["currency", "display_currency"])
def test_x_codes_that_are_no_currency_are_refused(code: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validation.currency(code, field)
    assert info.value.field == field


@pytest.mark.parametrize("code", ["XOF", "XAF", "XPF", "XCD", "EUR", "gbp", "JPY", "KWD"])
def test_real_currencies_are_kept_even_starting_with_x(code: str) -> None:
    assert validation.currency(code) == code.upper()
