"""The numbers' mails in every locale (pure rendering: no database, no SMTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from worker.outbox import templates as mail_templates

AT = datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
ABOUT = {
    "account_name": "Acme <b>",
    "account_id": "acc_1",
    "balance": Decimal("1.25"),
    "currency": "EUR",
    "display_currency": "EUR",
    "usd_rate": None,
    "top_up_url": "https://example.com/top-up",
}
LINES = [
    mail_templates.NumberLine("+447400123456", Decimal("4.5"), AT),
    mail_templates.NumberLine("+447400123457", Decimal("0.0075"), AT),
]


@pytest.mark.parametrize("locale", ["en", "ja", "zh"])
def test_fee_payment_failed_lists_the_numbers_and_the_cancellation(locale: str) -> None:
    mail = mail_templates.render_fee_payment_failed(
        locale=locale, **ABOUT, numbers=LINES, total=Decimal("4.5075"), cancel_at=AT
    )
    for body in (mail.text, mail.html):
        assert "+447400123456" in body and "+447400123457" in body
        assert "4.5075" in body  # sub-cent totals are never rounded
        assert "2026" in body
    assert "Acme &lt;b&gt;" in mail.html and "Acme <b>" in mail.text
    assert "\n" not in mail.subject


@pytest.mark.parametrize(
    ("locale", "unpaid", "depleted"),
    [
        ("en", "stayed unpaid", "stayed depleted"),
        ("ja", "猶予期間", "残高がなくなった"),
        ("zh", "宽限期", "余额持续为零"),
    ],
)
def test_numbers_cancelled_says_why(locale: str, unpaid: str, depleted: str) -> None:
    by_fee = mail_templates.render_numbers_cancelled(
        locale=locale, **ABOUT, numbers=LINES, reason="unpaid"
    )
    by_depletion = mail_templates.render_numbers_cancelled(
        locale=locale, **ABOUT, numbers=LINES, reason="depleted"
    )
    assert unpaid in by_fee.text and unpaid in by_fee.html
    assert depleted in by_depletion.text and depleted in by_depletion.html
    with pytest.raises(ValueError):
        mail_templates.render_numbers_cancelled(
            locale=locale, **ABOUT, numbers=LINES, reason="whim"
        )


@pytest.mark.parametrize(
    ("locale", "later", "now", "none"),
    [
        ("en", "will be cancelled at", "have been cancelled", "will be cancelled unless"),
        (
            "ja",
            "までにチャージされない場合",
            "キャンセルされました",
            "アカウントにチャージされない場合",
        ),
        ("zh", "之前未充值", "已被取消", "除非您为帐户充值"),
    ],
)
def test_the_depletion_mail_says_when_numbers_are_cancelled(
    locale: str, later: str, now: str, none: str
) -> None:
    def depleted(**numbers: object) -> mail_templates.RenderedMail:
        return mail_templates.render_depleted(
            locale=locale,
            **ABOUT,
            floor=Decimal(0),
            occurred_at=AT,
            **numbers,  # type: ignore[arg-type]
        )

    waiting = depleted(numbers=2, numbers_cancel_at=AT + timedelta(days=3))
    assert later in waiting.text and later in waiting.html and "2" in waiting.text
    assert "2026" in waiting.text
    gone = depleted(numbers=2, numbers_cancel_at=AT)
    assert now in gone.text and now in gone.html
    plain = depleted()
    assert none in plain.text and later not in plain.text
