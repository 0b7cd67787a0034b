"""The auto-reload failing mail (reload charges the PSP could not process), per locale."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

import worker  # noqa: F401  (importing the package traps FloatOperation)
from tests.outbox.test_mail_templates import (
    AT,
    DISPLAY_ONLY,
    RATE,
    URL,
    TagBalance,
    assert_in_both,
)
from worker.outbox.templates import LOCALES, RenderedMail, render_auto_reload_failing

NEXT = AT + timedelta(hours=4)
NEXT_DATES = {
    "en": "March 5, 2024, 6:07:09\u202fPM UTC",
    "ja": "2024年3月5日 18:07:09 UTC",
    "zh": "2024年3月5日 UTC 18:07:09",
}
SUBJECTS = {
    "en": "Auto-reload is failing for account Acme Ltd",
    "ja": "アカウント Acme Ltd の自動リロードが完了できていません",
    "zh": "帐户 Acme Ltd 的自动充值未能完成",
}
PHRASES = {
    "en": [
        "The last 3 attempts in a row to top up your account",
        "by €3,000.50",
        "the payment processor was unavailable",
        "was not charged",
        "Last reason given: Processor Network Unavailable - Try Again",
        "Auto-reload stays on and tries again, less often each time",
        "top up now",
        "€1.20",
    ],
    "ja": [
        "3 回連続で処理されませんでした",
        "決済処理サービスが利用できなかった",
        "請求は行われていません",
        "最後の理由：Processor Network Unavailable - Try Again",
        "自動リロードは [ON] のまま",
        "€3,000.50",
        "€1.20",
    ],
    "zh": [
        "已连续 3 次未能处理",
        "支付处理服务不可用",
        "未被扣款",
        "最近一次原因：Processor Network Unavailable - Try Again",
        "自动充值功能仍保持开启",
        "€3,000.50",
        "€1.20",
    ],
}


def render(**overrides: Any) -> RenderedMail:
    args: dict[str, Any] = {
        "locale": "en",
        "account_name": "Acme Ltd",
        "account_id": "acc_123",
        "currency": "EUR",
        "display_currency": "EUR",
        "usd_rate": RATE,
        "top_up_url": URL,
        "balance": Decimal("1.2"),
        "reload_amount": Decimal("3000.50"),
        "failures": 3,
        "reason": "Processor Network Unavailable - Try Again",
        "next_attempt_at": NEXT,
        "occurred_at": AT,
    }
    return render_auto_reload_failing(**(args | overrides))


@pytest.mark.parametrize("locale", LOCALES)
def test_subject_phrases_figures_and_the_next_attempt(locale: str) -> None:
    mail = render(locale=locale)
    assert mail.subject == SUBJECTS[locale]
    assert f"<title>{mail.subject}</title>" in mail.html
    assert_in_both(mail, *PHRASES[locale], NEXT_DATES[locale], "acc_123", URL)
    assert DISPLAY_ONLY[locale] not in mail.text + mail.html


@pytest.mark.parametrize("locale", LOCALES)
def test_layout_is_tidy_and_html_is_balanced(locale: str) -> None:
    mail = render(locale=locale)
    for body in (mail.text, mail.html):
        assert "{{" not in body and "{%" not in body
        assert "\n\n\n" not in body
    assert mail.text.endswith("\n") and not mail.text.startswith("\n")
    parser = TagBalance()
    parser.feed(mail.html)
    parser.close()
    assert parser.open == []


def test_usd_equivalent_beside_each_figure() -> None:
    mail = render(display_currency="USD")
    assert mail.text.count(DISPLAY_ONLY["en"]) == 2  # the amount and the balance


def test_a_reason_with_line_breaks_stays_on_one_line_and_html_is_escaped() -> None:
    mail = render(reason="down\r\nBcc: x@example.com <b>", account_name="<Acme>")
    assert "Last reason given: down Bcc: x@example.com <b>" in mail.text
    assert "Last reason given: down Bcc: x@example.com &lt;b&gt;" in mail.html
    assert "&lt;Acme&gt;" in mail.html


@pytest.mark.parametrize("failures", [0, -1, True, "3"])
def test_failures_must_be_a_positive_count(failures: Any) -> None:
    with pytest.raises(ValueError):
        render(failures=failures)
