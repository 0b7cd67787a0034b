"""Low-balance alerts through their services and a real SMTP server (aiosmtpd).

Time is passed in (`as_of` / `now`): "an hour later" is a scan with `as_of + 1h`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from config import Settings, get_settings, reset_settings
from tests.concurrency import at_once
from tests.smtp_server import HOST, Recorder, free_port, running
from worker.accounts import service as accounts
from worker.alerts import service as alerts
from worker.db.session import unit_of_work
from worker.kernel.errors import NotFound, ValidationError
from worker.ledger import adjustments
from worker.ledger.models import Account
from worker.outbox import mail
from worker.outbox.models import Event, Mail
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Settings]]:
    """Point the mail sender at a port (as an operator would, through the environment)."""

    def apply(port: int, **env: object) -> Settings:
        monkeypatch.setenv("SMTP_HOST", HOST)
        monkeypatch.setenv("SMTP_PORT", str(port))
        monkeypatch.setenv("SMTP_TIMEOUT_SECONDS", "5")
        monkeypatch.setenv("MAIL_FROM", "Billing <billing@example.net>")
        for name, value in env.items():
            monkeypatch.setenv(name, str(value))
        reset_settings()
        return get_settings()

    reset_settings()
    yield apply
    monkeypatch.undo()
    reset_settings()


def _account(
    balance: str = "20",
    *,
    name: str = "Alert Co",
    locale: str = "en",
    display_currency: str | None = None,
    emails: list[str] | None = None,
) -> str:
    with unit_of_work() as uow:
        account_id: str = accounts.create(
            uow,
            name=name,
            emails=["ops@example.com"] if emails is None else emails,
            locale=locale,
            display_currency=display_currency,
            now=T0,
        )["id"]
    if balance != "0":
        with unit_of_work() as uow:
            adjustments.adjust(uow, account_id=account_id, amount=balance, reason="seed", now=T0)
    return account_id


def _set(account_id: str, threshold: str, emails: list[str] | None = None) -> dict[str, Any]:
    with unit_of_work() as uow:
        return alerts.configure(
            uow, account_id=account_id, threshold=threshold, emails=emails, now=T0
        )


def _debit(account_id: str, amount: str, ref: str, at: datetime = T0) -> None:
    with unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount=amount, reference=ref, now=at)


def _credit(account_id: str, amount: str, at: datetime = T0) -> None:
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount=amount, reason="top up", now=at)


def _scan(as_of: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        return alerts.scan(uow, as_of)


def _send(now: datetime) -> dict[str, Any]:
    settings = get_settings()
    with unit_of_work() as uow:
        return mail.send_pending(uow, mail.transport_for(settings), settings, now)


def _mails(kind: str, account_id: str | None = None) -> list[Mail]:
    with unit_of_work() as uow:
        query = select(Mail).where(Mail.kind == kind).order_by(Mail.created_at)
        if account_id is not None:
            query = query.where(Mail.account_id == account_id)
        return list(uow.session.scalars(query))


def _events(type_: str, account_id: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Event)
                .where(Event.type == type_, Event.account_id == account_id)
                .order_by(Event.occurred_at)
            )
        )


def _get(account_id: str) -> Account:
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        return account


def _body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


# --- settings -------------------------------------------------------------------------------


def test_set_shows_in_the_account_and_email_replaces_the_list() -> None:
    account_id = _account(emails=["old@example.com"])
    shown = _set(account_id, "10", emails=["billing@example.com", "cto@example.org"])
    assert shown["alerts"] == {
        "enabled": True,
        "threshold": "10.00",
        "emails": ["billing@example.com", "cto@example.org"],
        "state": "armed",
        "last_alert_at": None,
    }
    # One list for invoices and alerts, as Nexmo keeps it.
    assert shown["emails"] == ["billing@example.com", "cto@example.org"]
    # Without --email the list is kept.
    assert _set(account_id, "12")["alerts"]["emails"] == ["billing@example.com", "cto@example.org"]
    with unit_of_work() as uow:
        off = alerts.turn_off(uow, account_id=account_id, now=T0)
    assert off["alerts"]["enabled"] is False
    assert off["emails"] == ["billing@example.com", "cto@example.org"]


@pytest.mark.parametrize(
    ("threshold", "emails", "field"),
    [
        ("10", ["not-an-address"], "email"),
        ("10", ["ok@example.com", "bad@@example.com"], "email"),
        ("10", [f"u{i}@example.com" for i in range(11)], "email"),
        ("-1", None, "threshold"),
        ("0", None, "threshold"),
        ("NaN", None, "threshold"),
        ("1e3", None, "threshold"),
        (1.5, None, "threshold"),
    ],
)
def test_bad_settings_name_the_field_and_write_nothing(
    threshold: Any, emails: list[str] | None, field: str
) -> None:
    account_id = _account(emails=["keep@example.com"])
    with pytest.raises(ValidationError) as err:
        _set(account_id, threshold, emails=emails)
    assert err.value.field == field
    account = _get(account_id)
    assert account.alerts_enabled is False
    assert account.alert_threshold is None
    assert account.emails == ["keep@example.com"]
    assert _events("alerts.enabled", account_id) == []


def test_alerts_need_an_address_and_an_existing_account() -> None:
    account_id = _account(emails=[])
    with pytest.raises(ValidationError) as err:
        _set(account_id, "10")
    assert err.value.field == "email"
    with pytest.raises(NotFound) as missing:
        _set("acc_missing", "10", emails=["a@example.com"])
    assert missing.value.field == "account_id"


# --- once per crossing ------------------------------------------------------------------------


def test_fires_once_per_crossing_and_rearms_on_the_credit_that_lifts_it() -> None:
    account_id = _account("20")
    _set(account_id, "10")
    assert _scan(T0)["alerted"] == 0  # 20 >= 10: nothing to say

    _debit(account_id, "15.5", "call-1")  # 4.50 < 10
    first = _scan(T0 + HOUR)
    assert first["alerted"] == 1
    [event] = _events("balance.low", account_id)
    assert event.data["balance"] == "4.50"
    assert event.data["threshold"] == "10.00"
    assert event.data["currency"] == "EUR"
    [notice] = _mails("balance.low", account_id)
    assert notice.recipients == ["ops@example.com"]
    assert _get(account_id).alert_state == "sent"

    # Still below for hours, and lower still: no repeat.
    for hours in range(2, 6):
        _debit(account_id, "0.5", f"call-h{hours}")
        assert _scan(T0 + hours * HOUR)["alerted"] == 0
    assert len(_mails("balance.low", account_id)) == 1

    _credit(account_id, "20")  # 22.00 >= 10: the credit re-arms
    assert _get(account_id).alert_state == "armed"
    assert _scan(T0 + 6 * HOUR)["alerted"] == 0

    _debit(account_id, "13", "call-again")  # 9.00 < 10: a new crossing
    assert _scan(T0 + 7 * HOUR)["alerted"] == 1
    assert len(_mails("balance.low", account_id)) == 2
    assert len(_events("balance.low", account_id)) == 2


def test_changing_only_the_addresses_does_not_repeat_the_alert() -> None:
    account_id = _account("5")
    _set(account_id, "10")
    assert _scan(T0)["alerted"] == 1
    _set(account_id, "10", emails=["new@example.com"])  # same threshold, new address
    assert _get(account_id).alert_state == "sent"
    assert _scan(T0 + HOUR)["alerted"] == 0
    _set(account_id, "8")  # a new threshold is a new question: 5 < 8 fires again
    assert _scan(T0 + 2 * HOUR)["alerted"] == 1
    assert [m.recipients for m in _mails("balance.low", account_id)] == [
        ["ops@example.com"],
        ["new@example.com"],
    ]


def test_a_template_failure_never_rolls_back_the_debit(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.outbox import templates as mail_templates

    def broken(**_: Any) -> Any:
        raise RuntimeError("template bug")

    monkeypatch.setattr(mail_templates, "render_depleted", broken)
    account_id = _account("2")
    _debit(account_id, "2", "last")
    assert _get(account_id).status == "suspended"
    [notice] = _mails("account.depleted", account_id)
    assert "account.depleted" in notice.subject
    assert "0.00 EUR" in notice.text_body


def test_a_replay_in_the_future_does_not_hold_back_its_mail() -> None:
    account_id = _account("5")
    _set(account_id, "10")
    future = datetime.now(UTC) + timedelta(days=30)
    assert _scan(future)["alerted"] == 1
    [notice] = _mails("balance.low", account_id)
    assert notice.next_attempt_at <= datetime.now(UTC)


def test_a_credit_that_stays_below_the_threshold_does_not_rearm() -> None:
    account_id = _account("5")
    _set(account_id, "10")
    assert _scan(T0)["alerted"] == 1
    _credit(account_id, "4.99")  # 9.99: still below
    assert _get(account_id).alert_state == "sent"
    assert _scan(T0 + HOUR)["alerted"] == 0
    _credit(account_id, "0.01")  # exactly the threshold: back at it
    assert _get(account_id).alert_state == "armed"


def test_the_scan_rearms_a_recovered_alert_the_credit_did_not() -> None:
    account_id = _account("5")
    _set(account_id, "10")
    assert _scan(T0)["alerted"] == 1
    with unit_of_work() as uow:  # a balance corrected outside the ledger path
        uow.session.execute(
            update(Account).where(Account.id == account_id).values(balance=Decimal("50"))
        )
    result = _scan(T0 + HOUR)
    assert result["rearmed"] == 1
    assert result["alerted"] == 0
    assert _get(account_id).alert_state == "armed"


def test_disabled_alerts_and_other_accounts_are_not_touched() -> None:
    quiet = _account("5")
    _set(quiet, "10")
    with unit_of_work() as uow:
        alerts.turn_off(uow, account_id=quiet, now=T0)
    never = _account("5")  # alerts never configured
    above = _account("50")
    _set(above, "10")
    result = _scan(T0)
    assert result["alerted"] == 0
    assert _mails("balance.low") == []
    assert {_get(a).alert_state for a in (quiet, never, above)} == {"armed"}


def test_two_concurrent_scans_send_one_email_per_account() -> None:
    ids = [_account("5", name=f"Race {i}") for i in range(40)]
    for account_id in ids:
        _set(account_id, "10")
    results = at_once(lambda: _scan(T0), 2)
    assert sum(r["alerted"] for r in results) == 40
    assert len(_mails("balance.low")) == 40
    assert {m.account_id for m in _mails("balance.low")} == set(ids)


def test_a_redelivered_scan_sends_nothing_more() -> None:
    account_id = _account("5")
    _set(account_id, "10")
    assert _scan(T0)["alerted"] == 1
    assert _scan(T0)["alerted"] == 0  # the same message again, same as_of
    assert len(_mails("balance.low", account_id)) == 1


def test_scan_query_is_backed_by_the_partial_index() -> None:
    with unit_of_work() as uow:
        uow.session.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = alerts.due_query(500).compile(
            dialect=uow.session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(r[0] for r in uow.session.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_accounts_alert_due" in plan, plan


def test_batches_commit_and_every_due_account_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_BATCH_SIZE", "3")
    reset_settings()
    ids = [_account("1", name=f"Batch {i}") for i in range(8)]
    for account_id in ids:
        _set(account_id, "2")
    result = _scan(T0)
    assert result["alerted"] == 8
    assert result["checked"] == 8
    with unit_of_work() as uow:
        sent = uow.session.scalar(
            select(func.count()).select_from(Account).where(Account.alert_state == "sent")
        )
    assert sent == 8
    reset_settings()


# --- depletion --------------------------------------------------------------------------------


def test_depletion_mails_at_once_and_once_per_depletion() -> None:
    account_id = _account("3", emails=["ops@example.com", "cfo@example.com"])
    _debit(account_id, "3", "last-call")  # 0.00: suspended, depleted
    assert _get(account_id).status == "suspended"
    [notice] = _mails("account.depleted", account_id)
    assert notice.recipients == ["ops@example.com", "cfo@example.com"]
    assert notice.status == "pending"
    _debit(account_id, "3", "last-call")  # a redelivered debit: duplicate, no new mail
    assert len(_mails("account.depleted", account_id)) == 1

    _credit(account_id, "5")  # reactivated
    _debit(account_id, "5", "again")  # depleted a second time: a second notice
    assert len(_mails("account.depleted", account_id)) == 2


def test_depletion_mail_goes_out_without_alerts_configured() -> None:
    account_id = _account("1")
    _debit(account_id, "1", "x")
    assert len(_mails("account.depleted", account_id)) == 1
    assert _mails("balance.low", account_id) == []


# --- real SMTP: content per locale, outage -----------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "subject", "depleted_subject"),
    [
        ("en", "Low balance alert", "API stopped"),
        ("ja", "【残高のアラート】", "API の利用を停止しました"),
        ("zh", "余额提醒", "API 已停止"),
    ],
)
def test_alert_and_depletion_mails_arrive_in_the_account_locale(
    smtp: Callable[..., Settings], locale: str, subject: str, depleted_subject: str
) -> None:
    server = Recorder()
    with running(server) as port:
        smtp(port)
        account_id = _account("20", name=f"Kaisha {locale}", locale=locale)
        _set(account_id, "10", emails=["billing@example.com", "alerts@example.org"])
        _debit(account_id, "15.5", "call")
        assert _scan(T0)["alerted"] == 1
        _debit(account_id, "4.5", "last")  # depleted
        assert _send(T0)["sent"] == 2

    messages = {str(r.message["Message-ID"]).split("@")[0].lstrip("<"): r for r in server.received}
    low = messages[_mails("balance.low", account_id)[0].id]
    depleted = messages[_mails("account.depleted", account_id)[0].id]
    assert sorted(low.rcpt_tos) == ["alerts@example.org", "billing@example.com"]
    assert sorted(depleted.rcpt_tos) == ["alerts@example.org", "billing@example.com"]
    for received in (low, depleted):
        text_body = _body(received.message, "plain")
        html_body = _body(received.message, "html")
        assert f"Kaisha {locale}" in text_body
        assert f"Kaisha {locale}" in html_body
    low_text = _body(low.message, "plain")
    assert str(low.message["Subject"]).startswith(subject)
    assert "€4.50" in low_text and "€10.00" in low_text  # Babel, for the locale
    assert depleted_subject in str(depleted.message["Subject"])
    assert "€0.00" in _body(depleted.message, "plain")


def test_usd_display_equivalent_is_shown_and_marked(smtp: Callable[..., Settings]) -> None:
    server = Recorder()
    with running(server) as port:
        smtp(port, USD_DISPLAY_RATES="EUR=1.0862")
        usd = _account("20", name="Dollar Co", display_currency="USD")
        eur = _account("20", name="Euro Co")
        for account_id in (usd, eur):
            _set(account_id, "10")
            _debit(account_id, "15.5", "call")
        assert _scan(T0)["alerted"] == 2
        assert _send(T0)["sent"] == 2
    by_name = {
        ("Dollar Co" in _body(r.message, "plain")): _body(r.message, "plain")
        for r in server.received
    }
    # 4.50 EUR x 1.0862 = 4.8879 -> 4.89 USD (display only).
    assert "$4.89" in by_name[True]
    assert "1.0862" in by_name[True]
    assert "$" not in by_name[False]


def test_smtp_down_does_not_stop_the_scan_and_the_mail_arrives_once_when_it_is_back(
    smtp: Callable[..., Settings],
) -> None:
    port = free_port()  # nothing listens here yet: the mail server is down
    smtp(port)
    ids = [_account("5", name=f"Outage {i}") for i in range(3)]
    for account_id in ids:
        _set(account_id, "10")
    result = _scan(T0)
    assert result["alerted"] == 3  # every account fired, the outage notwithstanding
    assert _send(T0)["sent"] == 0
    assert _scan(T0 + HOUR)["undelivered"] == 3  # still visible, not repeated
    assert len(_mails("balance.low")) == 3
    assert len(_events("balance.low", ids[0])) == 1

    server = Recorder()
    with running(server, port=port):
        later = T0 + 2 * HOUR  # past any backoff
        sent = _send(later)["sent"]
        assert sent == 3
        assert _send(later + HOUR)["sent"] == 0
    assert len(server.received) == 3
    assert len({str(r.message["Message-ID"]) for r in server.received}) == 3
    assert _scan(T0 + 3 * HOUR)["undelivered"] == 0


def test_the_beat_schedule_runs_the_scan_hourly() -> None:
    from worker.schedule import beat_schedule

    entry = beat_schedule(get_settings())["alerts-scan"]
    assert entry["task"] == "balance.alerts.scan"
    assert entry["schedule"] == timedelta(hours=1)
    # A tick still queued when the next is due expires: missed ticks are not replayed.
    assert entry["options"]["expires"] == 3600


def test_balance_and_threshold_are_exact_decimals_in_the_event() -> None:
    account_id = _account("10")
    _set(account_id, "9.9999")
    _debit(account_id, "0.0075", "sms-1")  # 9.9925 < 9.9999
    assert _scan(T0)["alerted"] == 1
    [event] = _events("balance.low", account_id)
    assert Decimal(event.data["balance"]) == Decimal("9.9925")
    assert Decimal(event.data["threshold"]) == Decimal("9.9999")
