"""A statement imported in bulk chunks (worker/bank/bulk.py, settling.py) decides exactly
what the same transfers received one at a time decide, whatever the chunk boundaries:
an account met many times in a chunk and across chunks, duplicates across chunks, an
account the bulk payer leaves to the charge engine, two imports at once; final invoice
numbers stay gap-free. Against real PostgreSQL."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.bank import camt
from tests.invoices import support as s
from worker.bank import statements
from worker.bank.models import BankTransfer
from worker.db.session import unit_of_work
from worker.invoices.models import Invoice
from worker.ledger.models import Account
from worker.outbox.models import Event, Mail

pytestmark = pytest.mark.integration

# (amount, memo template, currency); {r1}: account 1's reference, {i2_1}: account 2's
# second pro-forma number, {bad1}: account 1's reference with a typo; "dup N": the bank
# reference of transfer N again.
SCRIPT: list[tuple[str, str, str]] = [
    ("50.00", "top-up {r1}", "EUR"),  # same amount: the 50
    ("75.00", "RF {r1}", "EUR"),  # oldest first: 30 and 40, 5 left
    ("100.00", "invoice {i2_1}", "EUR"),  # the named one, not the older 100
    ("80.00", "{r2}", "EUR"),  # within the tolerance: pays 100, fee 20
    ("70.00", "{r3}", "EUR"),  # beyond it: unapplied, still-due mail
    ("30.00", "{r3}", "EUR"),  # now covered
    ("5.00", "thanks", "EUR"),  # suspense: no reference
    ("5.00", "{bad1}", "EUR"),  # suspense: a typo
    ("10.00", "{r1}", "USD"),  # suspense: currency mismatch
    ("50.00", "dup 0", "EUR"),  # the first transfer again
    ("95.00", "{r1}", "EUR"),  # 5 + 95 pay the 100
    ("60.00", "{r4}", "EUR"),  # a depleted account: reactivated (the engine's path)
    ("20.00", "{r1}", "EUR"),  # nothing open: unapplied
    ("15.00", "{r4}", "EUR"),  # and again
]


def _world() -> dict[str, Any]:
    ids = [s.account() for _ in range(4)]
    methods = [s.method(a) for a in ids]
    plan = [("30.00", "50.00", "40.00", "100.00"), ("100.00", "100.00"), ("100.00",), ("60.00",)]
    invoices = [
        [s.proforma(a, amount, m) for amount in amounts]
        for a, m, amounts in zip(ids, methods, plan, strict=True)
    ]
    with unit_of_work() as uow:  # account 4 is depleted: a credit reactivates it
        uow.session.execute(
            update(Account)
            .where(Account.id == ids[3])
            .values(status="suspended", suspension_reason="depleted")
        )
    refs = [s.reference(a) for a in ids]
    bad = s.typo(refs[0])
    return {
        "ids": ids,
        "invoices": invoices,
        "fields": {
            **{f"r{n + 1}": r for n, r in enumerate(refs)},
            "i2_1": invoices[1][1]["number"],
            "bad1": bad,
        },
    }


def _transfers(world: dict[str, Any], prefix: str) -> list[tuple[str, str, str, str]]:
    """(bank reference, amount, memo, currency) per line of SCRIPT."""
    out = []
    for n, (amount, memo, currency) in enumerate(SCRIPT):
        if memo.startswith("dup "):
            ref = f"{prefix}-{int(memo.split()[1])}"
            out.append((ref, amount, "", currency))
            continue
        out.append((f"{prefix}-{n}", amount, memo.format(**world["fields"]), currency))
    return out


def _counts() -> dict[str, int]:
    with unit_of_work() as uow:
        found: dict[str, int] = {}
        for model, column in ((Event, Event.type), (Mail, Mail.kind)):
            for key, n in uow.session.execute(
                select(column, func.count()).select_from(model).group_by(column)
            ):
                found[f"{model.__name__}:{key}"] = int(n)
        return found


def _state(world: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Everything the rules decided, with this world's ids replaced by positions."""
    position = {
        inv["id"]: (a, i) for a, invs in enumerate(world["invoices"]) for i, inv in enumerate(invs)
    }
    accounts = {acc_id: n for n, acc_id in enumerate(world["ids"])}
    with unit_of_work() as uow:
        transfers = {
            t.bank_reference: (
                t.status,
                t.reason,
                accounts.get(t.account_id or ""),
                t.result["unapplied"],
                [
                    (position[a["invoice_id"]], a["amount"], a["fee"], bool(a["final_number"]))
                    for a in t.result["applied"]
                ],
            )
            for t in uow.session.scalars(
                select(BankTransfer).where(BankTransfer.bank_reference.like(f"{prefix}-%"))
            )
        }
        balances = [
            (a.balance, a.unapplied, a.status)
            for a in (uow.session.get(Account, acc_id) for acc_id in world["ids"])
            if a is not None
        ]
        invoices = sorted(
            (
                accounts[inv.account_id],
                inv.kind,
                inv.status,
                str(inv.amount),
                position.get(inv.proforma_id or inv.id),
            )
            for inv in uow.session.scalars(
                select(Invoice).where(Invoice.account_id.in_(world["ids"]))
            )
        )
    return {
        "transfers": {ref.split("-", 1)[1]: v for ref, v in transfers.items()},
        "balances": balances,
        "invoices": invoices,
    }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def _assert_gap_free() -> None:
    with unit_of_work() as uow:
        numbers = sorted(
            n
            for n in uow.session.scalars(select(Invoice.number).where(Invoice.kind == "final"))
            if n is not None
        )
    sequence = [int(n.rsplit("-", 1)[1]) for n in numbers]
    assert sequence == list(range(1, len(sequence) + 1)), numbers


@pytest.mark.parametrize("batch", [3, 1000])
def test_bulk_chunks_decide_what_one_at_a_time_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    one = _world()
    before = _counts()
    for ref, amount, memo, currency in _transfers(one, "ONE"):
        s.receive(amount, memo or None, ref=ref, currency=currency)
    one_events = _delta(before, _counts())

    bulk = _world()
    monkeypatch.setattr(statements, "BATCH", batch)  # 3: accounts and a duplicate span chunks
    path = tmp_path / "stmt.xml"
    path.write_text(
        camt.statement(
            camt.entry(ref, amount, memo, currency=currency)
            for ref, amount, memo, currency in _transfers(bulk, "BLK")
        ),
        encoding="utf-8",
    )
    before = _counts()
    with unit_of_work() as uow:
        result = statements.import_file(uow, str(path))
    bulk_events = _delta(before, _counts())

    assert result["errors"] == [] and result["transfers"] == len(SCRIPT)
    assert result["duplicates"] == 1 and result["unmatched"] == 3
    assert _state(bulk, "BLK") == _state(one, "ONE")
    # Same events and mails, minus the pro-formas' own (made before `before`).
    assert bulk_events == one_events
    assert one_events["Event:invoice.paid"] == 8 and one_events["Event:account.reactivated"] == 1
    assert one_events["Mail:invoice.still_due"] == 1
    _assert_gap_free()
    s.audit_ok()


def test_duplicates_across_chunks_move_money_once_and_a_changed_amount_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = s.account()
    ref = s.reference(account_id)
    monkeypatch.setattr(statements, "BATCH", 2)
    xml = camt.statement(
        [
            camt.entry("D-1", "10.00", ref),
            camt.entry("D-2", "10.00", ref),
            camt.entry("D-1", "10.00", ref),  # next chunk: a duplicate
            camt.entry("D-2", "11.00", ref),  # same reference, other amount: refused
            camt.entry("D-3", "10.00", ref),
            camt.entry("D-3", "10.00", ref),  # a duplicate inside the chunk
        ]
    )
    path = tmp_path / "dups.xml"
    path.write_text(xml, encoding="utf-8")
    with unit_of_work() as uow:
        result = statements.import_file(uow, str(path))
    assert result["transfers"] == 5 and result["duplicates"] == 2 and result["unapplied"] == 3
    [error] = result["errors"]
    lines = xml.splitlines()
    assert error["field"] == "bank_reference"
    assert error["line"] == lines.index(next(x for x in lines if "11.00" in x)) + 1
    assert s.get_account(account_id).unapplied == Decimal("30")
    assert s.count(BankTransfer) == 3
    s.audit_ok()


def test_two_imports_at_once_in_small_chunks_move_money_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [s.account() for _ in range(6)]
    refs = [s.reference(a) for a in ids]
    for account_id in ids:
        method = s.method(account_id)
        s.proforma(account_id, "10.00", method)
        s.proforma(account_id, "20.00", method)
    monkeypatch.setattr(statements, "BATCH", 7)
    path = tmp_path / "stmt.xml"
    path.write_text(
        camt.statement(camt.entry(f"C-{i}", "10.00", refs[i % 6]) for i in range(60)),
        encoding="utf-8",
    )
    results: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with unit_of_work() as uow:
                results.append(statements.import_file(uow, str(path)))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures and len(results) == 2
    assert sum(int(r["duplicates"]) for r in results) == 60
    assert s.count(BankTransfer) == 60
    for account_id in ids:
        # 100 received each: the 10 paid by the first, the 20 by the second within the
        # tolerance (10 short, a bank fee), 80 unapplied.
        acc = s.get_account(account_id)
        assert acc.balance == Decimal("30") and acc.unapplied == Decimal("80")
    _assert_gap_free()
    s.audit_ok()


def test_a_payment_refused_in_a_chunk_is_reported_on_its_line_and_the_rest_goes_in(
    tmp_path: Path,
) -> None:
    """The bulk payer meets a credit that would pass MAX_AMOUNT: the chunk is redone one
    entry at a time, so the error lands on its line and the other lines go in."""
    from worker.kernel.money import MAX_AMOUNT

    full, other = s.account(), s.account()
    s.proforma(full, "50.00", s.method(full))
    with unit_of_work() as uow:  # a balance the pro-forma's 50 would take past the maximum
        uow.session.execute(
            update(Account).where(Account.id == full).values(balance=MAX_AMOUNT - 10)
        )
    xml = camt.statement(
        [
            camt.entry("M-1", "5.00", s.reference(other)),
            camt.entry("M-2", "50.00", s.reference(full)),
            camt.entry("M-3", "7.00", s.reference(other)),
        ]
    )
    path = tmp_path / "max.xml"
    path.write_text(xml, encoding="utf-8")
    with unit_of_work() as uow:
        result = statements.import_file(uow, str(path))
    [error] = result["errors"]
    lines = xml.splitlines()
    assert error["field"] == "amount"
    assert error["line"] == lines.index(next(x for x in lines if "M-2" in x)) + 1
    assert result["transfers"] == 2 and result["unapplied"] == 2
    assert s.get_account(other).unapplied == Decimal("12")
    assert s.get_account(full).unapplied == 0 and s.count(BankTransfer) == 2
