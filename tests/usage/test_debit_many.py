"""`balance.usage.debit_many` (issue 16): many debits in one message, each judged with the
rules of `balance.usage.debit`, on real PostgreSQL (and once on the embedded SQLite)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from config import get_settings, reset_settings
from tests.usage.test_usage import (
    _run_threads,
    account_row,
    credit,
    events_of,
    funded,
    new_account,
    snapshot,
)
from tests.usage.test_usage import debit as single_debit
from worker.db import migrate
from worker.db.session import dispose_engine, unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import ValidationError
from worker.ledger import service as ledger
from worker.usage import batch

pytestmark = pytest.mark.integration

RELOAD_NOW = "balance.auto_reload.reload_now"


def many(debits: Any, sent: list[Any] | None = None) -> dict[str, Any]:
    """One debit_many in its own transaction; follow-ups sent after commit go to `sent`."""
    record = (lambda n, a, k: sent.append((n, a))) if sent is not None else None
    if record is None:
        with unit_of_work() as uow:
            return batch.debit_many(uow, debits=debits, now=now())
    with unit_of_work(dispatch=record) as uow:
        return batch.debit_many(uow, debits=debits, now=now())


def d(account_id: str, amount: str, reference: str, **extra: Any) -> dict[str, Any]:
    return {"account_id": account_id, "amount": amount, "reference": reference, **extra}


def auto_reload(account_id: str, threshold: str, amount: str) -> None:
    """Auto-reload on, without a card: only the trigger (the reload_now message) is tested."""
    with unit_of_work() as uow:
        uow.session.execute(
            text(
                "UPDATE accounts SET auto_reload_enabled = true, auto_reload_threshold = :t,"
                " auto_reload_amount = :a WHERE id = :id"
            ),
            {"t": Decimal(threshold), "a": Decimal(amount), "id": account_id},
        )


def audit_ok() -> None:
    with unit_of_work() as uow:
        report = ledger.audit(uow.session)
    assert report["ok"], report


def statuses(result: dict[str, Any]) -> list[str]:
    return [r["status"] for r in result["results"]]


# --- mixed results in one batch ------------------------------------------------------------------


def test_mixed_results_in_one_batch_each_judged_alone() -> None:
    a = funded("10")
    b = new_account(emails=["ops@example.com"])  # the depletion mail goes somewhere
    credit(b, "1")
    auto_reload(a, "5", "20")
    first = single_debit(a, "0.5", "before")  # 9.50 left
    sent: list[Any] = []
    result = many(
        [
            d(a, "1", "a-1"),  # ok 8.50
            d(a, "0.5", "before"),  # duplicate of the debit sent before: first result
            d(a, "3", "a-2"),  # ok 5.50 (still at or above 5)
            d(a, "1", "a-3"),  # ok 4.50: crosses 5, one reload
            d(a, "0.25", "a-4"),  # ok 4.25: already below, no second reload
            d(b, "0.6", "b-1"),  # ok 0.40
            d(b, "0.4", "b-2", description="card 4111 1111 1111 1111"),  # ok 0: depleted
            d(b, "0.1", "b-3"),  # refused: nothing left
            d("acc_missing", "1", "x-1"),  # refused: no such account
            d(a, "1.0000001", "a-5"),  # refused: bad amount
            d(a, "9", "before"),  # refused: the reference was used for another amount
            d(a, "1", "a-1"),  # duplicate inside the batch
        ],
        sent,
    )
    rows = result["results"]
    assert statuses(result) == [
        "ok", "duplicate", "ok", "ok", "ok", "ok", "ok",
        "refused", "refused", "refused", "refused", "duplicate",
    ]  # fmt: skip
    assert (result["ok"], result["duplicate"], result["refused"]) == (6, 2, 4)
    assert [r["balance"] for r in rows[:7]] == [
        "8.50", "9.50", "5.50", "4.50", "4.25", "0.40", "0.00",
    ]  # fmt: skip
    assert rows[1]["transaction_id"] == first["transaction_id"]
    assert rows[11]["transaction_id"] == rows[0]["transaction_id"]
    errors = [(r["error"]["code"], r["error"]["field"]) for r in rows[7:11]]
    assert errors == [
        ("insufficient_funds", "amount"),
        ("not_found", "account_id"),
        ("invalid", "amount"),
        ("reference_conflict", "reference"),
    ]
    assert rows[7]["balance"] == "0.00" and rows[8]["balance"] is None
    for r in rows[7:11]:
        assert r["transaction_id"] is None
        assert r["error"]["message"].startswith(f"{r['error']['field']}: ")
    assert all(r["error"] is None for r in rows[:7])
    assert [r["account_id"] for r in rows[:8]] == [a] * 5 + [b] * 3

    assert account_row(a).balance == Decimal("4.25")
    assert tuple(account_row(b)) == (Decimal("0"), "suspended", "depleted")
    assert [s for s in sent if s[0] == RELOAD_NOW] == [(RELOAD_NOW, (a,))]
    depleted = events_of(b, "account.depleted")
    assert len(depleted) == 1
    assert depleted[0].data["transaction_id"] == rows[6]["transaction_id"]
    assert depleted[0].data["balance"] == "0.00"
    with unit_of_work() as uow:
        mails = uow.session.scalar(
            text("SELECT count(*) FROM mail_outbox WHERE kind = 'account.depleted'")
        )
        stored = uow.session.scalar(
            text("SELECT description FROM ledger_transactions WHERE id = :id"),
            {"id": rows[6]["transaction_id"]},
        )
        kinds = Counter(
            uow.session.scalars(text("SELECT kind FROM ledger_transactions WHERE account_id = :a"),
                                {"a": a})
        )  # fmt: skip
    assert mails == 1
    assert stored == "card [REDACTED]"
    assert kinds == {"adjustment": 1, "usage_debit": 5}
    audit_ok()


def test_a_batch_gives_what_the_same_debits_one_by_one_give() -> None:
    """The rules are `debit`'s: the same list, sent one at a time to twin accounts, ends in
    the same outcomes, balances and statuses."""
    twins = [(funded("3"), funded("3")) for _ in range(3)]
    rng = random.Random(16)
    plan = []
    for _ in range(40):
        k = rng.randrange(3)
        amount = rng.choice(["0.1", "0.25", "1", "2"])
        ref = f"r-{rng.randrange(25)}"
        plan.append((k, amount, ref))
    result = many([d(twins[k][0], amount, ref) for k, amount, ref in plan])
    one_by_one = []
    for k, amount, ref in plan:
        try:
            r = single_debit(twins[k][1], amount, ref)
            one_by_one.append(("duplicate" if r["duplicate"] else "ok", r["balance"], None))
        except Exception as exc:
            one_by_one.append(("refused", None, getattr(exc, "code", "?")))
    batched = [
        (r["status"], r["balance"] if r["status"] != "refused" else None,
         r["error"]["code"] if r["error"] else None)
        for r in result["results"]
    ]  # fmt: skip
    assert batched == one_by_one
    for batched_id, single_id in twins:
        assert tuple(account_row(batched_id)) == tuple(account_row(single_id))
    audit_ok()


# --- idempotency ---------------------------------------------------------------------------------


def test_a_duplicate_inside_one_batch_moves_money_once() -> None:
    a = funded("5")
    result = many([d(a, "2", "same"), d(a, "2", "same"), d(a, "2", "same")])
    assert statuses(result) == ["ok", "duplicate", "duplicate"]
    assert len({r["transaction_id"] for r in result["results"]}) == 1
    assert {r["balance"] for r in result["results"]} == {"3.00"}
    assert account_row(a).balance == Decimal("3")
    audit_ok()


def test_a_refused_debit_is_not_remembered_inside_the_batch() -> None:
    """As with single debits, a refusal stores nothing: the same reference later in the
    list is judged afresh (here it fits once the first debit of it failed)."""
    a = funded("1")
    result = many([d(a, "2", "r"), d(a, "1", "r")])
    assert statuses(result) == ["refused", "ok"]
    assert account_row(a).balance == Decimal("0")


def test_redelivery_of_a_whole_batch_changes_nothing() -> None:
    a, b = funded("10"), funded("1")
    debits = [d(a, "1", "m-1"), d(b, "1", "m-2"), d(a, "2", "m-3"), d(b, "5", "m-4")]
    first = many(debits)
    assert statuses(first) == ["ok", "ok", "ok", "refused"]
    before = snapshot()
    sent: list[Any] = []
    again = many(debits, sent)
    assert statuses(again) == ["duplicate", "duplicate", "duplicate", "refused"]
    for one, two in zip(first["results"][:3], again["results"][:3], strict=True):
        assert two["transaction_id"] == one["transaction_id"]
        assert two["balance"] == one["balance"]
    assert snapshot() == before
    assert sent == []
    assert len(events_of(b, "account.depleted")) == 1
    audit_ok()


# --- the message itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "debits",
    [None, "x", {}, [], [d("acc_1", "1", "r")] * 1001],
    ids=["none", "str", "dict", "empty", "1001"],
)
def test_a_malformed_list_is_refused_whole_by_name(debits: Any) -> None:
    funded("1")
    before = snapshot()
    with pytest.raises(ValidationError) as info:
        many(debits)
    assert info.value.field == "debits"
    assert snapshot() == before


def test_bad_items_are_refused_alone_by_name_without_echoing_card_numbers() -> None:
    a = funded("10")
    result = many(
        [
            "not an object",
            {"account_id": a, "amount": "1", "reference": "r", "extra": 1},
            d(a, 0.5, "r-float"),  # type: ignore[arg-type]
            d(a, "1", "4242 4242 4242 4242"),
            d(a, "1", "line\nbreak"),
            d(a, "1", "r-ok", description="fine\x00text"),
            d("", "1", "r-x"),
            {"amount": "1", "reference": "r-y"},
        ]
    )
    fields = [r["error"]["field"] if r["error"] else None for r in result["results"]]
    assert fields == ["debits", "extra", "amount", "reference", "reference", None, "account_id",
                      "account_id"]  # fmt: skip
    assert "4242" not in repr(result)
    assert result["results"][5]["status"] == "ok"
    assert account_row(a).balance == Decimal("9")


def test_debit_many_through_the_celery_task() -> None:
    from worker.celery import app

    app.loader.import_default_modules()
    a = funded("10")
    task = app.tasks["balance.usage.debit_many"]
    result = task([d(a, "0.0057", "m-1"), d(a, "0.0057", "m-1")])
    assert statuses(result) == ["ok", "duplicate"]
    assert result["results"][0]["balance"] == "9.9943"
    # A control character in one debit refuses that debit only (not the whole message).
    mixed = task(debits=[d(a, "1", "m\x07"), d(a, "1", "m-2")])
    assert statuses(mixed) == ["refused", "ok"]
    with pytest.raises(ValidationError):
        task([])


# --- concurrency ---------------------------------------------------------------------------------


def test_five_concurrent_batches_over_the_same_accounts_in_different_orders() -> None:
    ids = [funded("100") for _ in range(10)]
    batches = []
    for n in range(5):
        debits = [d(ids[i], "0.5", f"b{n}-{i}-{k}") for i in range(10) for k in range(4)]
        random.Random(n).shuffle(debits)  # each batch meets the accounts in its own order
        batches.append(debits)
    results = _run_threads(5, lambda n: many(batches[n]))
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:2]
    assert all(r["ok"] == 40 for r in results)
    for account_id in ids:
        assert account_row(account_id).balance == Decimal("90")  # 5 x 4 x 0.5
    audit_ok()


def test_concurrent_batches_and_single_debits_never_overdraw() -> None:
    a = funded("5")

    def body(n: int) -> Any:
        if n % 2:
            return single_debit(a, "0.1", f"s-{n}")
        return many([d(a, "0.1", f"m-{n}-{k}") for k in range(10)])

    results = _run_threads(10, body)
    singles = [r for n, r in enumerate(results) if n % 2]
    batches = [r for n, r in enumerate(results) if not n % 2]
    spent = sum(1 for r in singles if isinstance(r, dict)) + sum(r["ok"] for r in batches)
    assert spent == 50  # 5 singles + 45 of 50 batched debits; 5.00 / 0.10
    assert account_row(a).balance == Decimal("0")
    audit_ok()


# --- the embedded default ------------------------------------------------------------------------


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("BALANCE_HOME", str(tmp_path))
    reset_settings()
    dispose_engine()
    assert get_settings().embedded
    migrate.upgrade()
    ledger.clear_caches()
    yield tmp_path
    dispose_engine()
    monkeypatch.undo()
    reset_settings()
    dispose_engine()
    ledger.clear_caches()


def test_debit_many_on_embedded_sqlite(embedded: Path) -> None:
    a = new_account()
    credit(a, "1")
    result = many([d(a, "0.0057", f"m-{i}") for i in range(100)] + [d(a, "0.0057", "m-0")])
    assert result["ok"] == 100 and result["duplicate"] == 1
    assert account_row_sqlite(a) == Decimal("0.43")
    with unit_of_work() as uow:
        assert ledger.audit(uow.session)["ok"]


def account_row_sqlite(account_id: str) -> Decimal:
    from worker.accounts import service as accounts

    with unit_of_work() as uow:
        return accounts.get(uow.session, account_id).balance
