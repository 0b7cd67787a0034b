"""The auto-reload paused mail (a reload charge needs the cardholder: 3-D Secure), per locale."""

from __future__ import annotations

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
from worker.outbox.templates import LOCALES, RenderedMail, render_auto_reload_action_required

SUBJECTS = {
    "en": "Auto-reload is paused for account Acme Ltd: please confirm your card",
    "ja": "アカウント Acme Ltd の自動リロードを一時停止しました：カードの認証をお願いします",
    "zh": "帐户 Acme Ltd 的自动充值已暂停：请验证您的银行卡",
}
PHRASES = {
    "en": [
        "Your bank asked for your confirmation (3-D Secure)",
        "by €2,099.00",
        "Nothing was charged.",
        "Reason given: Cardholder Authentication Required",
        "Auto-reload is paused and will not try again by itself",
        "add your card again and confirm it with your bank",
        "saved as your default payment method",
        "€1.20",
    ],
    "ja": [
        "本人認証（3-D セキュア）を求められました",
        "€2,099.00",
        "請求は行われていません",
        "理由：Cardholder Authentication Required",
        "自動リロードは一時停止しており",
        "既定のお支払い方法として保存してください",
        "€1.20",
    ],
    "zh": [
        "身份验证（3-D Secure）",
        "€2,099.00",
        "您未被扣款",
        "原因：Cardholder Authentication Required",
        "自动充值已暂停，不会自行重试",
        "保存为默认付款方式",
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
        "reload_amount": Decimal("2099.00"),
        "reason": "Cardholder Authentication Required",
        "occurred_at": AT,
    }
    return render_auto_reload_action_required(**(args | overrides))


@pytest.mark.parametrize("locale", LOCALES)
def test_subject_phrases_and_figures(locale: str) -> None:
    mail = render(locale=locale)
    assert mail.subject == SUBJECTS[locale]
    assert f"<title>{mail.subject}</title>" in mail.html
    assert_in_both(mail, *PHRASES[locale], "acc_123", URL)
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


def test_a_reason_with_line_breaks_stays_on_one_line_and_html_is_escaped() -> None:
    mail = render(reason="auth\r\nBcc: x@example.com <b>", account_name="<Acme>")
    assert "Reason given: auth Bcc: x@example.com <b>" in mail.text
    assert "Reason given: auth Bcc: x@example.com &lt;b&gt;" in mail.html
    assert "&lt;Acme&gt;" in mail.html
