"""Runway (issue 18): daily spend and days left from the trailing 7 days of usage, in
`accounts show`, the `balance.low` event and the low-balance mail (en, ja, zh).

A known usage history is written at fixed moments; `accounts show` is read with the clock
moved by time-machine, the alert scan with its `as_of`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import select

from worker.accounts import service as accounts
from worker.alerts import service as alerts
from worker.db.session import unit_of_work
from worker.ledger import adjustments
from worker.outbox.models import Event, Mail
from worker.usage import service as usage

pytestmark = pytest.mark.integration

T = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _history(locale: str = "en") -> str:
    """Credit 100 ten days ago; usage 14.00 eight days ago (outside the window), then
    7.00, 14.00 and a 0.50 usage inside the last 7 days (21.50); an adjustment debit (not
    usage) inside it. Balance at T: 100 - 14 - 21.50 - 2 = 62.50."""
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(
                uow, name="Runway Co", emails=["ops@example.com"], locale=locale, now=T - 10 * DAY
            )["id"]
        )
    with unit_of_work() as uow:
        adjustments.adjust(
            uow, account_id=account_id, amount="100", reason="seed", now=T - 10 * DAY
        )
    for n, (amount, at) in enumerate(
        [("14", T - 8 * DAY), ("7", T - 6 * DAY), ("14", T - 3 * DAY), ("0.5", T - DAY)]
    ):
        with unit_of_work() as uow:
            usage.debit(uow, account_id=account_id, amount=amount, reference=f"u{n}", now=at)
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="-2", reason="fix", now=T - DAY)
    return account_id


def _show_at(account_id: str, moment: datetime) -> dict[str, Any]:
    with time_machine.travel(moment, tick=False), unit_of_work() as uow:
        return accounts.view(accounts.get(uow.session, account_id))


def test_accounts_show_gives_daily_spend_and_days_left_from_the_last_7_days() -> None:
    account_id = _history()
    shown = _show_at(account_id, T)
    assert shown["balance"] == "62.50"
    runway = shown["runway"]
    assert runway["spend"] == "21.50"  # the usage 8 days ago and the adjustment are not spend
    assert runway["daily_spend"] == "3.07"  # 21.50 / 7 = 3.0714..., for people
    assert runway["days_left"] == 20  # floor(62.50 / (21.50 / 7)) = floor(20.3)
    assert runway["window_days"] == 7
    assert runway["since"] == (T - 7 * DAY).isoformat()

    # Two days later the 7.00 six days before T has left the window: 14.50 in 7 days.
    later = _show_at(account_id, T + 2 * DAY)["runway"]
    assert (later["spend"], later["daily_spend"], later["days_left"]) == ("14.50", "2.07", 30)

    # Ten days later nothing was spent in the window: no runway to give.
    quiet = _show_at(account_id, T + 10 * DAY)["runway"]
    assert (quiet["spend"], quiet["daily_spend"], quiet["days_left"]) == ("0.00", "0.00", None)


def test_days_left_is_zero_when_nothing_is_left() -> None:
    with unit_of_work() as uow:
        account_id = str(accounts.create(uow, name="Empty", now=T - DAY)["id"])
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="3", reason="seed", now=T - DAY)
    with unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount="3", reference="all", now=T - DAY)
    runway = _show_at(account_id, T)["runway"]
    assert (runway["daily_spend"], runway["days_left"]) == ("0.43", 0)


def _fire(account_id: str, threshold: str, as_of: datetime) -> tuple[Event, Mail]:
    with unit_of_work() as uow:
        alerts.configure(uow, account_id=account_id, threshold=threshold, now=as_of)
    with unit_of_work() as uow:
        assert alerts.scan(uow, as_of)["alerted"] == 1
    with unit_of_work() as uow:
        event = uow.session.scalars(
            select(Event).where(Event.account_id == account_id, Event.type == "balance.low")
        ).one()
        notice = uow.session.scalars(
            select(Mail).where(Mail.account_id == account_id, Mail.kind == "balance.low")
        ).one()
        return event, notice


def test_the_low_balance_event_and_mail_say_the_runway() -> None:
    account_id = _history()
    # Spend the balance down to 10.00 at T (usage: the window now holds 74.00).
    with unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount="52.5", reference="big", now=T - DAY)
    event, notice = _fire(account_id, "20", T)
    runway = event.data["runway"]
    # 21.50 + 52.50 = 74.00 in 7 days: 10.57 a day; 10.00 / 10.571... = 0.9 -> 0 days.
    assert (runway["daily_spend"], runway["days_left"]) == ("10.57", 0)
    assert runway["text"] == "less than a day left at your current spend"
    assert "Less than a day left at your current spend (€10.57" in notice.text_body
    assert notice.html_body is not None and "Less than a day left" in notice.html_body


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        ("en", "About 3 days left at your current spend"),
        ("ja", "あと約 3 日分"),
        ("zh", "大约还能使用 3 天"),
    ],
)
def test_about_3_days_left_in_every_locale(locale: str, words: str) -> None:
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(uow, name="Three", emails=["a@example.com"], locale=locale, now=T)["id"]
        )
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="100", reason="s", now=T - 7 * DAY)
    with unit_of_work() as uow:  # 70 over the week: 10 a day; 30 left: about 3 days
        usage.debit(uow, account_id=account_id, amount="70", reference="week", now=T - 5 * DAY)
    event, notice = _fire(account_id, "40", T)
    assert event.data["runway"]["days_left"] == 3
    assert event.data["runway"]["text"] == "about 3 days left at your current spend"
    assert words in notice.text_body


def test_no_runway_sentence_without_spend() -> None:
    with unit_of_work() as uow:
        account_id = str(accounts.create(uow, name="Quiet", emails=["a@example.com"], now=T)["id"])
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="5", reason="s", now=T - DAY)
    event, notice = _fire(account_id, "10", T)
    assert event.data["runway"]["days_left"] is None
    assert event.data["runway"]["text"] is None
    assert "current spend" not in notice.text_body
