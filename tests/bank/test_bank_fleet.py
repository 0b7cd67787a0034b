"""`balance.bank.transfer_received` on real worker processes: a bank webhook that delivers
the same transfer several times at once, and transfers spread over invoices, move money
once; the card invoice job runs on the fleet too."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.fleet_support import Fleet
from tests.invoices import support as s
from worker.bank.models import BankTransfer

pytestmark = pytest.mark.fleet


def test_webhook_redeliveries_and_concurrent_transfers_move_money_once(fleet: Fleet) -> None:
    from worker.celery import app

    fleet.start_worker(concurrency=2)
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    account_id = s.account()
    method = s.method(account_id)
    invoices = [s.proforma(account_id, a, method) for a in ("30.00", "50.00", "20.00")]
    ref = s.reference(account_id)

    def send(amount: str, bank_reference: str, memo: str) -> Any:
        return app.send_task(
            "balance.bank.transfer_received",
            kwargs={
                "amount": amount,
                "currency": "EUR",
                "bank_reference": bank_reference,
                "memo": memo,
            },
        )

    # The same transfer four times at once (a webhook retried), and two others.
    pending = [send("50.00", "WH-1", invoices[1]["number"]) for _ in range(4)]
    pending += [send("30.00", "WH-2", ref), send("25.00", "WH-3", ref)]
    results = [p.get(timeout=120) for p in pending]
    first_four = results[:4]
    assert sorted(bool(r["duplicate"]) for r in first_four) == [False, True, True, True]
    assert {r["transfer_id"] for r in first_four} == {first_four[0]["transfer_id"]}
    assert s.count(BankTransfer) == 3
    acc = s.get_account(account_id)
    # 50 + 30 + 25 = 105 received: all three invoices (100) paid, 5 unapplied.
    assert acc.balance == Decimal("100") and acc.unapplied == Decimal("5")
    assert {i.status for i in s.invoices_of(account_id) if i.kind == "proforma"} == {"paid"}
    finals = [i for i in s.invoices_of(account_id) if i.kind == "final"]
    assert len(finals) == 3 and len({f.number for f in finals}) == 3
    s.audit_ok()
    assert app.send_task("balance.invoices.issue_due").get(timeout=60)["issued"] == 0
