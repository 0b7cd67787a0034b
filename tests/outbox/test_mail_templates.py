"""Customer mail bodies: per locale and kind, figures exact, USD display only, input escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest

import worker  # noqa: F401  (importing the package traps FloatOperation)
from worker.outbox.templates import (
    LOCALES,
    RenderedMail,
    display_equivalent,
    environment,
    render_auto_reload_disabled,
    render_depleted,
    render_low_balance,
)

KINDS = ("low_balance", "depleted", "auto_reload_disabled")
AT = datetime(2024, 3, 5, 14, 7, 9, tzinfo=UTC)
URL = "https://dashboard.example.com/billing"
RATE = Decimal("1.0862")

# Exactly what Babel gives for AT, in UTC with the zone shown.
DATES = {
    "en": "March 5, 2024, 2:07:09\u202fPM UTC",
    "ja": "2024年3月5日 14:07:09 UTC",
    "zh": "2024年3月5日 UTC 14:07:09",
}

# The balance 4.9925 EUR beside its USD equivalent (4.9925 × 1.0862 = 5.4228… → 5.42).
BALANCE_WITH_USD = {
    "en": "€4.9925 (≈ $5.42 at 1 EUR = 1.0862 USD, for display only)",
    "ja": "€4.9925（約 $5.42：1 EUR = 1.0862 USD で換算した表示のみの参考値）",
    "zh": "€4.9925（约 US$5.42，按 1 EUR = 1.0862 USD 换算，仅供显示参考）",
}
DISPLAY_ONLY = {"en": "for display only", "ja": "表示のみの参考値", "zh": "仅供显示参考"}

SUBJECTS = {
    ("en", "low_balance"): "Low balance alert: account Acme Ltd is below €10.00",
    ("en", "depleted"): "Urgent: balance depleted, API stopped for account Acme Ltd",
    ("en", "auto_reload_disabled"): "Auto-reload turned off for account Acme Ltd",
    ("ja", "low_balance"): "【残高のアラート】アカウント Acme Ltd の残高が €10.00 を下回りました",
    ("ja", "depleted"): "【重要】アカウント Acme Ltd の残高がなくなり、API の利用を停止しました",
    ("ja", "auto_reload_disabled"): "アカウント Acme Ltd の自動リロードを無効にしました",
    ("zh", "low_balance"): "余额提醒：帐户 Acme Ltd 的余额已低于 €10.00",
    ("zh", "depleted"): "【重要】帐户 Acme Ltd 余额已用尽，API 已停止",
    ("zh", "auto_reload_disabled"): "帐户 Acme Ltd 的自动充值功能已关闭",
}

# Phrases in the mail's language, and the figures as Babel formats them.
PHRASES = {
    ("en", "low_balance"): [
        "has fallen below your alert threshold",
        "you can no longer use the API and your virtual numbers will be cancelled",
        "€4.9925",
        "€10.00",
    ],
    ("en", "depleted"): [
        "has reached zero",
        "We have stopped API access for this account",
        "Your virtual numbers will be cancelled unless you top up your account",
        "enable auto-reload",
        "-€0.0075",
    ],
    ("en", "auto_reload_disabled"): [
        "We have turned off auto-reload",
        "the last 3 attempts in a row to top up €20.00 were declined",
        "Last reason given: Insufficient funds",
        "check the card or PayPal account",
        "turn auto-reload back on",
        "€1.20",
    ],
    ("ja", "low_balance"): [
        "残高のしきい値を下回りました",
        "API を使用できなくなり、仮想番号がキャンセルされます",
        "€4.9925",
        "€10.00",
    ],
    ("ja", "depleted"): [
        "残高がゼロになりました",
        "API の利用を停止しました",
        "仮想番号はキャンセルされます",
        "自動リロードを有効にしてください",
        "-€0.0075",
    ],
    ("ja", "auto_reload_disabled"): [
        "3 回連続で拒否された",
        "自動リロードを無効にしました",
        "最後の拒否理由：Insufficient funds",
        "クレジットカードまたは PayPal アカウント",
        "自動リロードを再び [ON] に設定",
        "€20.00",
        "€1.20",
    ],
    ("zh", "low_balance"): [
        "余额已低于您设置的余额阈值",
        "您将无法再使用我们的 API，而您的虚拟号码也会被取消",
        "€4.9925",
        "€10.00",
    ],
    ("zh", "depleted"): [
        "余额已达到零",
        "我们已停止此帐户的 API 服务",
        "否则您的虚拟号码将被取消",
        "请启用自动充值功能",
        "-€0.0075",
    ],
    ("zh", "auto_reload_disabled"): [
        "已连续 3 次被拒绝",
        "自动充值功能",
        "最近一次拒绝原因：Insufficient funds",
        "信用卡或 PayPal 帐户",
        "重新开启自动充值功能",
        "€20.00",
        "€1.20",
    ],
}

# Said only when the API has been stopped: the depleted mail is not a louder low_balance.
API_STOPPED = {
    "en": "We have stopped API access",
    "ja": "API の利用を停止しました",
    "zh": "我们已停止此帐户的 API 服务",
}
ENABLE_HINT = {
    "en": "Enable auto-reload to top up",
    "ja": "自動リロードを有効にすると",
    "zh": "您可以启用自动充值功能",
}
ENABLED_NOTE = {
    "en": "Auto-reload is on for this account",
    "ja": "自動リロードが有効になっています",
    "zh": "已启用自动充值功能",
}
NO_URL_SENTENCE = {
    "en": "To top up, sign in to your dashboard and open",
    "ja": "チャージするには、Dashboard にサインインし",
    "zh": "要为帐户充值，请登录 Dashboard",
}


def render(kind: str, **overrides: Any) -> RenderedMail:
    """One mail of `kind` with the usual test account; `overrides` change any argument."""
    args: dict[str, Any] = {
        "locale": "en",
        "account_name": "Acme Ltd",
        "account_id": "acc_123",
        "currency": "EUR",
        "display_currency": "EUR",
        "usd_rate": RATE,
        "top_up_url": URL,
    }
    if kind == "low_balance":
        args |= {
            "balance": Decimal("4.9925"),
            "threshold": Decimal("10"),
            "checked_at": AT,
            "auto_reload_enabled": False,
        }
        args |= overrides
        return render_low_balance(**args)
    if kind == "depleted":
        args |= {"balance": Decimal("-0.0075"), "floor": Decimal("0"), "occurred_at": AT}
        args |= overrides
        return render_depleted(**args)
    args |= {
        "balance": Decimal("1.2"),
        "reload_amount": Decimal("20"),
        "declines": 3,
        "reason": "Insufficient funds",
        "occurred_at": AT,
    }
    args |= overrides
    return render_auto_reload_disabled(**args)


def assert_in_both(mail: RenderedMail, *phrases: str) -> None:
    for phrase in phrases:
        assert phrase in mail.text, phrase
        assert phrase in mail.html, phrase


class TagBalance(HTMLParser):
    """Fails on a closing tag that does not close the innermost open one."""

    VOID = frozenset({"meta", "br", "hr", "img", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


# --- per locale and kind ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("locale", LOCALES)
def test_subject_phrases_figures_and_time(locale: str, kind: str) -> None:
    mail = render(kind, locale=locale)

    assert mail.subject == SUBJECTS[locale, kind]
    assert f"<title>{mail.subject}</title>" in mail.html
    assert_in_both(mail, *PHRASES[locale, kind], DATES[locale], "acc_123", URL)
    assert DISPLAY_ONLY[locale] not in mail.text + mail.html  # display_currency EUR
    assert "USD" not in mail.text + mail.html


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("locale", LOCALES)
def test_layout_is_tidy_and_html_is_balanced(locale: str, kind: str) -> None:
    mail = render(kind, locale=locale)

    for body in (mail.text, mail.html):
        assert "{{" not in body and "{%" not in body
        assert "\n\n\n" not in body
    assert mail.text.endswith("\n") and not mail.text.startswith("\n")
    assert mail.html.startswith("<!DOCTYPE html>")
    lang = {"en": 'lang="en"', "ja": 'lang="ja"', "zh": 'lang="zh-Hans"'}[locale]
    assert f"<html {lang}>" in mail.html
    parser = TagBalance()
    parser.feed(mail.html)
    parser.close()
    assert parser.open == []


@pytest.mark.parametrize("locale", LOCALES)
def test_depleted_is_a_distinct_urgent_mail(locale: str) -> None:
    low = render("low_balance", locale=locale)
    depleted = render("depleted", locale=locale, balance=Decimal("0"))

    assert depleted.subject != low.subject
    assert API_STOPPED[locale] in depleted.text
    assert API_STOPPED[locale] not in low.text + low.html
    assert "#b3261e" in depleted.html  # the red banner
    assert "#b3261e" not in low.html


def test_depleted_at_a_floor_below_zero_names_the_floor() -> None:
    mail = render("depleted", floor=Decimal("-5"), balance=Decimal("-5.0025"))

    assert_in_both(mail, "has reached its lowest allowed level of -€5.00", "-€5.0025")
    assert "has reached zero" not in mail.text


def test_one_decline_is_singular() -> None:
    mail = render("auto_reload_disabled", declines=1)

    assert_in_both(mail, "the last attempt to top up €20.00 was declined")


def test_empty_reason_leaves_out_the_reason_line() -> None:
    mail = render("auto_reload_disabled", reason="")

    assert "Last reason given" not in mail.text + mail.html


# --- money -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("10"), "€10.00"),
        (Decimal("4.99"), "€4.99"),
        (Decimal("4.9925"), "€4.9925"),
        (Decimal("0.000001"), "€0.000001"),
        (Decimal("1234.5"), "€1,234.50"),
    ],
)
def test_amounts_keep_every_digit_and_never_round(amount: Decimal, expected: str) -> None:
    mail = render("low_balance", balance=amount)

    assert f"Balance:    {expected}\n" in mail.text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("locale", LOCALES)
def test_usd_equivalent_beside_the_figure_marked_display_only(locale: str, kind: str) -> None:
    mail = render(kind, locale=locale, display_currency="USD", balance=Decimal("4.9925"))

    assert_in_both(mail, BALANCE_WITH_USD[locale])


def test_every_figure_gets_its_usd_equivalent() -> None:
    low = render("low_balance", display_currency="USD")
    ard = render("auto_reload_disabled", display_currency="USD")

    assert "€10.00 (≈ $10.86 at 1 EUR = 1.0862 USD, for display only)" in low.text
    assert "€20.00 (≈ $21.72 at 1 EUR = 1.0862 USD, for display only)" in ard.text
    assert "€1.20 (≈ $1.30 at 1 EUR = 1.0862 USD, for display only)" in ard.text


def test_usd_equivalent_of_a_zero_decimal_currency() -> None:
    mail = render(
        "low_balance",
        locale="ja",
        currency="JPY",
        balance=Decimal("1234"),
        threshold=Decimal("2000"),
        display_currency="USD",
        usd_rate=Decimal("0.0067"),
    )

    assert "￥1,234（約 $8.27：1 JPY = 0.0067 USD で換算した表示のみの参考値）" in mail.text


@pytest.mark.parametrize(
    ("currency", "display_currency", "usd_rate"),
    [
        ("EUR", "USD", None),  # no rate known: show the account currency only
        ("USD", "USD", RATE),  # already USD: nothing to convert
        ("EUR", "EUR", RATE),
    ],
)
def test_no_usd_equivalent(currency: str, display_currency: str, usd_rate: Decimal | None) -> None:
    mail = render(
        "low_balance", currency=currency, display_currency=display_currency, usd_rate=usd_rate
    )

    assert "for display only" not in mail.text + mail.html
    assert "≈" not in mail.text + mail.html
    symbol = "$" if currency == "USD" else "€"
    assert f"Balance:    {symbol}4.9925\n" in mail.text


@pytest.mark.parametrize("rate", [Decimal("0"), Decimal("-1.0862"), Decimal("NaN")])
def test_a_rate_that_is_not_positive_is_refused(rate: Decimal) -> None:
    with pytest.raises((ValueError, TypeError)):
        render("low_balance", display_currency="USD", usd_rate=rate)


@pytest.mark.parametrize(
    ("amount", "rate", "currency", "expected"),
    [
        (Decimal("2.345"), Decimal("1"), "USD", Decimal("2.34")),  # half to even: down
        (Decimal("2.355"), Decimal("1"), "USD", Decimal("2.36")),  # half to even: up
        (Decimal("0.005"), Decimal("1"), "USD", Decimal("0.00")),
        (Decimal("0.015"), Decimal("1"), "USD", Decimal("0.02")),
        (Decimal("2.3450001"), Decimal("1"), "USD", Decimal("2.35")),  # above half
        (Decimal("4.9925"), RATE, "USD", Decimal("5.42")),
        (Decimal("-0.0075"), RATE, "USD", Decimal("-0.01")),
        (Decimal("2.5"), Decimal("1"), "JPY", Decimal("2")),  # minor unit of JPY is 1
        (Decimal("3.5"), Decimal("1"), "JPY", Decimal("4")),
        (Decimal("1.0005"), Decimal("1"), "KWD", Decimal("1.000")),
    ],
)
def test_display_equivalent_rounds_half_even_to_the_minor_unit(
    amount: Decimal, rate: Decimal, currency: str, expected: Decimal
) -> None:
    result = display_equivalent(amount, rate, currency)

    assert result == expected
    assert str(result) == str(expected)  # scale too: "0.00", not "0"


def test_display_equivalent_rounds_only_once() -> None:
    """1.015 × (1 − 10⁻³⁰) is just below 1.015: rounding the product to 28 digits first
    would make it exactly 1.015 and round up to 1.02."""
    assert display_equivalent(Decimal("1.015"), Decimal("0." + "9" * 30)) == Decimal("1.01")


def test_display_equivalent_refuses_float() -> None:
    with pytest.raises(TypeError):
        display_equivalent(4.9925, RATE)  # type: ignore[arg-type]


def test_a_float_balance_is_refused() -> None:
    with pytest.raises(TypeError):
        render("low_balance", balance=4.9925)


# --- time ------------------------------------------------------------------------------------


def test_time_is_shown_in_utc_whatever_the_offset_given() -> None:
    tokyo = timezone(timedelta(hours=9))
    mail = render("low_balance", checked_at=datetime(2024, 3, 5, 23, 7, 9, tzinfo=tokyo))

    assert_in_both(mail, DATES["en"])


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        render("depleted", occurred_at=datetime(2024, 3, 5, 14, 7, 9))


# --- sanitising ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("locale", LOCALES)
def test_account_name_is_escaped_in_html_and_literal_in_text(locale: str, kind: str) -> None:
    name = '<script>alert("x")</script> & Co'
    mail = render(kind, locale=locale, account_name=name)

    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in mail.html
    assert name in mail.text
    assert name in mail.subject


def test_decline_reason_is_escaped_in_html() -> None:
    mail = render("auto_reload_disabled", reason="<b>Do not honor</b>")

    assert "Last reason given: <b>Do not honor</b>" in mail.text
    assert "Last reason given: &lt;b&gt;Do not honor&lt;/b&gt;" in mail.html


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("breaker", ["\r\n", "\n", "\r", "\u2028", "\x00", "\t"])
def test_subject_is_one_line(kind: str, breaker: str) -> None:
    mail = render(kind, account_name=f"Evil{breaker}Bcc: victim@example.com")

    assert mail.subject.splitlines() == [mail.subject]
    assert "\x00" not in mail.subject
    assert "Evil Bcc: victim@example.com" in mail.subject
    assert "Evil Bcc: victim@example.com" in mail.text  # nor can it forge lines in the body


# --- locale ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("unknown", ["fr", "de_DE", "", "xx-YY"])
def test_unknown_locale_falls_back_to_english(kind: str, unknown: str) -> None:
    assert render(kind, locale=unknown) == render(kind, locale="en")


def test_locale_code_is_case_and_space_insensitive() -> None:
    assert render("depleted", locale=" JA ") == render("depleted", locale="ja")


def test_every_locale_has_every_template() -> None:
    names = environment().list_templates()
    per_locale = {
        locale: {n.split("/", 1)[1] for n in names if n.startswith(f"{locale}/")}
        for locale in LOCALES
    }

    assert per_locale["ja"] == per_locale["en"] == per_locale["zh"]
    for kind in KINDS:
        assert {f"{kind}.subject.txt.j2", f"{kind}.txt.j2", f"{kind}.html.j2"} <= per_locale["en"]


def test_environment_is_cached_and_strict() -> None:
    env = environment()

    assert environment() is env
    assert env.autoescape("en/low_balance.html.j2") is True  # type: ignore[operator]
    assert env.autoescape("en/low_balance.txt.j2") is False  # type: ignore[operator]


# --- top-up URL and auto-reload hint ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("locale", LOCALES)
def test_without_top_up_url_says_where_to_top_up(locale: str, kind: str) -> None:
    mail = render(kind, locale=locale, top_up_url=None)

    assert_in_both(mail, NO_URL_SENTENCE[locale])
    assert "href" not in mail.html
    assert "https://" not in mail.text


def test_top_up_url_is_a_link_and_escaped_in_html() -> None:
    url = "https://pay.example.com/top-up?account=acc_123&amount=20"
    mail = render("depleted", top_up_url=url)

    assert f"Top up your account here: {url}\n" in mail.text
    assert 'href="https://pay.example.com/top-up?account=acc_123&amp;amount=20"' in mail.html


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "/relative/path", "ftp://example.com/x", "https://a b.com"]
)
def test_top_up_url_must_be_absolute_http(url: str) -> None:
    with pytest.raises(ValueError, match="top_up_url"):
        render("low_balance", top_up_url=url)


@pytest.mark.parametrize("locale", LOCALES)
def test_auto_reload_hint_only_when_auto_reload_is_off(locale: str) -> None:
    off = render("low_balance", locale=locale, auto_reload_enabled=False)
    on = render("low_balance", locale=locale, auto_reload_enabled=True)

    assert_in_both(off, ENABLE_HINT[locale])
    assert ENABLED_NOTE[locale] not in off.text + off.html
    assert_in_both(on, ENABLED_NOTE[locale])
    assert ENABLE_HINT[locale] not in on.text + on.html
