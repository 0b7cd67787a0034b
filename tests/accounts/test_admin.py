"""Operator surfaces on accounts (issue 18): list/search/paging, update, suspend/resume.

The suspension rules: an operator's suspension (`admin`) is never lifted by money, usage
is refused with `account_suspended`, and `resume` leaves the account as its money says.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select

from worker.accounts import admin
from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.errors import AccountSuspended, NotFound, ValidationError
from worker.ledger import adjustments
from worker.outbox.models import Event
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _create(name: str, **extra: Any) -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name=name, now=T0, **extra)["id"])


def _list(**kwargs: Any) -> list[dict[str, Any]]:
    with unit_of_work() as uow:
        return admin.list_accounts(uow.session, **kwargs)


def _credit(account_id: str, amount: str, at: datetime = T0) -> None:
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount=amount, reason="seed", now=at)


def _debit(account_id: str, amount: str, ref: str, at: datetime = T0) -> dict[str, Any]:
    with unit_of_work() as uow:
        return usage.debit(uow, account_id=account_id, amount=amount, reference=ref, now=at)


def _events(account_id: str, type_: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Event)
                .where(Event.account_id == account_id, Event.type == type_)
                .order_by(Event.occurred_at, Event.id)
            )
        )


def _show(account_id: str) -> dict[str, Any]:
    with unit_of_work() as uow:
        return accounts.view(accounts.get(uow.session, account_id))


# --- list: filter, search, paging -------------------------------------------------------------


def test_list_filters_by_status_and_searches_name_company_and_emails() -> None:
    acme = _create("Acme Ltd", emails=["ops@acme.example"])
    tanaka = _create("Tanaka", company="Tanaka Trading KK", finance_email="kaikei@tanaka.example")
    other = _create("Other", emails=["someone@else.example"])
    with unit_of_work() as uow:
        admin.suspend(uow, account_id=other, reason="fraud review", now=T0)

    assert [a["id"] for a in _list()] == sorted([acme, tanaka, other])
    assert [a["id"] for a in _list(status="suspended")] == [other]
    assert [a["id"] for a in _list(status="active")] == sorted([acme, tanaka])
    assert [a["id"] for a in _list(search="acme")] == [acme]  # name and address
    assert [a["id"] for a in _list(search="TRADING")] == [tanaka]  # company, any case
    assert [a["id"] for a in _list(search="kaikei@")] == [tanaka]  # finance address
    assert [a["id"] for a in _list(search="else.example")] == [other]  # alert address
    assert [a["id"] for a in _list(search="else", status="active")] == []
    assert _list(search="%") == []  # LIKE wildcards are literal
    assert _list(search="_") == []
    row = _list(search="Tanaka")[0]
    assert row["company"] == "Tanaka Trading KK"
    assert row["finance_email"] == "kaikei@tanaka.example"
    assert row["balance"] == "0.00"


def test_list_pages_with_after_in_id_order() -> None:
    ids = sorted(_create(f"Page {n}") for n in range(5))
    first = _list(limit=2)
    assert [a["id"] for a in first] == ids[:2]
    second = _list(limit=2, after=first[-1]["id"])
    assert [a["id"] for a in second] == ids[2:4]
    third = _list(limit=2, after=second[-1]["id"])
    assert [a["id"] for a in third] == ids[4:]
    assert _list(limit=2, after=third[-1]["id"]) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"status": "closed"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": True}, "limit"),
        ({"after": " "}, "after"),
        ({"search": " "}, "search"),
        ({"search": "x" * 201}, "search"),
    ],
)
def test_list_refuses_bad_values_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        _list(**kwargs)
    assert err.value.field == field


# --- update ----------------------------------------------------------------------------------


def test_update_changes_only_what_is_given_and_records_the_fields() -> None:
    account_id = _create("Acme", emails=["a@acme.example"])
    later = T0 + timedelta(hours=1)
    with unit_of_work() as uow:
        shown = admin.update(
            uow,
            account_id=account_id,
            now=later,
            company="Acme Holdings",
            finance_email="Finance@Acme.example",
            locale="ja",
        )
    assert shown["company"] == "Acme Holdings"
    assert shown["finance_email"] == "Finance@acme.example"  # domain normalised
    assert shown["locale"] == "ja"
    assert shown["name"] == "Acme"
    assert shown["emails"] == ["a@acme.example"]
    [event] = _events(account_id, "account.updated")
    assert event.data == {"fields": ["company", "finance_email", "locale"]}

    with unit_of_work() as uow:
        shown = admin.update(
            uow,
            account_id=account_id,
            now=later,
            name="Acme Two",
            emails=["b@acme.example", "c@acme.example"],
            display_currency="USD",
            country="de",
            company="",
        )
    assert shown["name"] == "Acme Two"
    assert shown["emails"] == ["b@acme.example", "c@acme.example"]
    assert shown["display_currency"] == "USD"
    assert shown["country"] == "DE"
    assert shown["company"] is None  # "" clears it
    with unit_of_work() as uow:  # the same values again: nothing changes, nothing recorded
        admin.update(uow, account_id=account_id, now=later, name="Acme Two")
    assert len(_events(account_id, "account.updated")) == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"finance_email": "not-an-address"}, "finance_email"),
        ({"emails": ["nope"]}, "email"),
        ({"locale": "fr"}, "locale"),
        ({"display_currency": "JPY"}, "display_currency"),
        ({"country": "XX"}, "country"),
        ({"company": "c" * 201}, "company"),
        ({"locale": "fr", "name": "Fine"}, "locale"),
    ],
)
def test_update_refuses_a_bad_value_and_writes_nothing(kwargs: dict[str, Any], field: str) -> None:
    account_id = _create("Acme")
    with pytest.raises(ValidationError) as err, unit_of_work() as uow:
        admin.update(uow, account_id=account_id, now=T0, **{"company": "Kept?", **kwargs})
    assert err.value.field == field
    assert _show(account_id)["company"] is None  # the valid value given beside it is not kept
    assert _events(account_id, "account.updated") == []


def test_update_of_a_missing_account_is_not_found() -> None:
    with pytest.raises(NotFound), unit_of_work() as uow:
        admin.update(uow, account_id="acc_missing", now=T0, name="x")


# --- suspension -------------------------------------------------------------------------------


def test_money_never_lifts_an_operator_suspension_and_usage_is_refused() -> None:
    account_id = _create("Acme")
    _credit(account_id, "10")
    _debit(account_id, "1", "before")
    with unit_of_work() as uow:
        shown = admin.suspend(uow, account_id=account_id, reason="chargeback review", now=T0)
    assert (shown["status"], shown["suspension_reason"]) == ("suspended", "admin")
    [event] = _events(account_id, "account.suspended")
    assert event.data["reason"] == "chargeback review"
    assert event.data["previous_status"] == "active"

    with pytest.raises(AccountSuspended) as err:
        _debit(account_id, "1", "after")
    assert (err.value.code, err.value.field) == ("account_suspended", "account_id")
    assert _debit(account_id, "1", "before")["duplicate"] is True  # a replay still answers
    _credit(account_id, "50")  # a credit does not reactivate it
    shown = _show(account_id)
    assert (shown["status"], shown["suspension_reason"]) == ("suspended", "admin")
    assert shown["balance"] == "59.00"
    assert _events(account_id, "account.reactivated") == []

    with unit_of_work() as uow:  # suspending again changes nothing
        admin.suspend(uow, account_id=account_id, reason="again", now=T0)
    assert len(_events(account_id, "account.suspended")) == 1

    with unit_of_work() as uow:
        shown = admin.resume(uow, account_id=account_id, now=T0)
    assert (shown["status"], shown["suspension_reason"]) == ("active", None)
    [resumed] = _events(account_id, "account.resumed")
    assert resumed.data == {"status": "active", "suspension_reason": None}
    assert _debit(account_id, "1", "after")["status"] == "active"
    with unit_of_work() as uow:  # a repeat is harmless
        admin.resume(uow, account_id=account_id, now=T0)
    assert len(_events(account_id, "account.resumed")) == 1


def test_a_suspension_over_a_depletion_resumes_to_depleted_until_money_comes() -> None:
    account_id = _create("Acme")
    _credit(account_id, "1")
    _debit(account_id, "1", "all")  # depleted: suspended (depleted)
    assert _show(account_id)["suspension_reason"] == "depleted"
    with unit_of_work() as uow:
        admin.suspend(uow, account_id=account_id, reason="review", now=T0)
    [event] = _events(account_id, "account.suspended")
    assert event.data["previous_reason"] == "depleted"
    with unit_of_work() as uow:
        shown = admin.resume(uow, account_id=account_id, now=T0)
    assert (shown["status"], shown["suspension_reason"]) == ("suspended", "depleted")
    _credit(account_id, "5")  # money lifts a depletion, as always
    assert _show(account_id)["status"] == "active"


def test_a_depletion_is_still_known_at_resume_after_the_events_are_purged() -> None:
    """The outbox purge deletes published events after 30 days, and an update moves
    `updated_at`: neither may make a depleted account at zero active again."""
    account_id = _create("Acme")
    _credit(account_id, "1")
    _debit(account_id, "1", "all")
    with unit_of_work() as uow:
        admin.suspend(uow, account_id=account_id, reason="review", now=T0)
        admin.update(uow, account_id=account_id, name="Acme Ltd", now=T0 + timedelta(days=1))
    with unit_of_work() as uow:
        uow.session.execute(delete(Event).where(Event.account_id == account_id))
    with unit_of_work() as uow:
        shown = admin.resume(uow, account_id=account_id, now=T0 + timedelta(days=40))
    assert (shown["status"], shown["suspension_reason"]) == ("suspended", "depleted")


def test_a_new_account_at_zero_resumes_active() -> None:
    account_id = _create("Fresh")
    with unit_of_work() as uow:
        admin.suspend(uow, account_id=account_id, reason="kyc", now=T0)
    with unit_of_work() as uow:
        assert admin.resume(uow, account_id=account_id, now=T0)["status"] == "active"


def test_suspend_needs_a_reason_and_redacts_card_numbers() -> None:
    account_id = _create("Acme")
    with pytest.raises(ValidationError) as err, unit_of_work() as uow:
        admin.suspend(uow, account_id=account_id, reason=" ", now=T0)
    assert err.value.field == "reason"
    assert _show(account_id)["status"] == "active"
    with unit_of_work() as uow:
        admin.suspend(uow, account_id=account_id, reason="card 4111 1111 1111 1111", now=T0)
    [event] = _events(account_id, "account.suspended")
    assert "4111" not in event.data["reason"]
    assert "[REDACTED]" in event.data["reason"]


def test_resume_restores_numbers_a_depletion_suspended() -> None:
    """Depleted (numbers suspended), then suspended by an operator: a credit cannot restore
    the numbers (the account is not active); the resume that leaves it active does."""
    from worker.numbers import service as numbers
    from worker.numbers.models import Number

    account_id = _create("Numbers Co")
    _credit(account_id, "5")
    with unit_of_work() as uow:
        number_id = numbers.rent(
            uow,
            account_id=account_id,
            msisdn="+447400123456",
            country="GB",
            monthly_fee="1",
            now=T0,
        )["id"]
    _debit(account_id, "4", "all")  # 5 - 1 (first month) - 4 = 0: depleted
    with unit_of_work() as uow:
        assert uow.session.get(Number, number_id).status == "suspended"  # type: ignore[union-attr]
        admin.suspend(uow, account_id=account_id, reason="review", now=T0)
    _credit(account_id, "20")
    with unit_of_work() as uow:
        assert uow.session.get(Number, number_id).status == "suspended"  # type: ignore[union-attr]
    with unit_of_work() as uow:
        assert admin.resume(uow, account_id=account_id, now=T0)["status"] == "active"
    with unit_of_work() as uow:
        assert uow.session.get(Number, number_id).status == "active"  # type: ignore[union-attr]
    assert len(_events(account_id, "number.restored")) == 1


def test_debit_many_refuses_an_operator_suspended_account_alone() -> None:
    """`balance.usage.debit_many` judges each debit with the rules of `usage.debit`: the
    suspended account's debit is refused with `account_suspended`, the others go through."""
    from worker.usage import batch

    held = _create("Held")
    free = _create("Free")
    _credit(held, "10")
    _credit(free, "10")
    with unit_of_work() as uow:
        admin.suspend(uow, account_id=held, reason="review", now=T0)
    with unit_of_work() as uow:
        out = batch.debit_many(
            uow,
            debits=[
                {"account_id": held, "amount": "1", "reference": "a"},
                {"account_id": free, "amount": "1", "reference": "b"},
            ],
            now=T0,
        )
    refused, ok = out["results"]
    assert refused["status"] == "refused"
    assert refused["error"]["code"] == "account_suspended"
    assert refused["error"]["field"] == "account_id"
    assert ok["status"] == "ok"
    assert _show(held)["balance"] == "10.00"
    assert _show(free)["balance"] == "9.00"
