"""Refunds with real worker processes, Redis and PostgreSQL: repeated and concurrent
`balance.payments.refund` messages make one refund each (issue 14)."""

from __future__ import annotations

import signal
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from celery import group

from tests.fleet_support import Fleet, wait_for
from tests.invoices import support as s
from tests.refunds import support as r
from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import now

pytestmark = pytest.mark.fleet


def test_repeated_and_concurrent_refund_messages_make_one_refund(fleet: Fleet) -> None:
    fleet.start_worker(concurrency=3)
    fleet.start_worker(concurrency=3)
    fleet.wait_ready()
    same_key_account, same_key_charge = r.card_account("90.00")
    racing_account, racing_charge = r.card_account("70.00")
    key = f"fleet-{uuid.uuid4().hex}"
    same = [
        app.signature(
            task_names.PAYMENTS_REFUND,
            args=[same_key_charge],
            kwargs={"amount": "40.00", "idempotency_key": key},
        )
        for _ in range(6)
    ]
    # Full refunds with their own keys (the message ids): the charge's lock lets one through.
    racing = [app.signature(task_names.PAYMENTS_REFUND, args=[racing_charge]) for _ in range(6)]
    results = group(same + racing).apply_async().get(timeout=90, propagate=False)
    same_results, racing_results = results[:6], results[6:]
    assert len({res["refund_id"] for res in same_results}) == 1, same_results
    assert r.remote_refunds(key) == 1
    assert s.get_account(same_key_account).balance == Decimal("50.00")
    ok = [res for res in racing_results if isinstance(res, dict)]
    refused = [res for res in racing_results if not isinstance(res, dict)]
    assert len(ok) == 1 and ok[0]["status"] == "succeeded", racing_results
    assert len(refused) == 5 and all("refunded in full" in str(e) for e in refused), refused
    assert [row.status for row in r.rows(racing_charge)] == ["succeeded"]
    assert s.get_account(racing_account).balance == 0
    # Two refunds made side by side: two credit notes, numbered without a gap.
    notes = sorted(
        str(i.number)
        for account in (same_key_account, racing_account)
        for i in s.invoices_of(account)
        if i.kind == "credit_note"
    )
    year = now().year
    assert notes == [f"CN-{year}-000001", f"CN-{year}-000002"]
    s.audit_ok()


def test_kill_minus_nine_mid_refund_then_the_janitor_finds_it_one_refund(fleet: Fleet) -> None:
    slow = fleet.start_worker(concurrency=1, extra_env={"PSP_STUB_LATENCY_MS": "20000"})
    fleet.wait_ready()
    account_id, charge_id = r.card_account("60.00")
    key = f"kill-{uuid.uuid4().hex}"
    app.send_task(
        task_names.PAYMENTS_REFUND,
        args=[charge_id],
        kwargs={"amount": "25.00", "idempotency_key": key},
    )
    # The PSP has made the refund; its answer is slow. Kill the worker right now.
    wait_for(lambda: r.remote_refunds(key) == 1, 30, "the remote refund")
    slow.kill(signal.SIGKILL)
    slow.proc.wait(10)
    [row] = r.rows(charge_id)
    assert row.status == "pending"
    assert s.get_account(account_id).balance == Decimal("35.00")  # held while unknown

    fleet.start_worker(concurrency=2)
    fleet.wait_ready()

    def sync(moment: datetime) -> dict[str, int]:
        result: dict[str, int] = app.send_task(
            task_names.REFUNDS_SYNC, kwargs={"as_of": moment.isoformat()}
        ).get(timeout=60)
        return result

    assert sync(now())["checked"] == 0  # the lease still protects the call in flight
    assert sync(now() + timedelta(days=1)) == {
        "checked": 1,
        "resolved": 1,
        "reminded": 0,
        "expired": 0,
    }
    assert [row.status for row in r.rows(charge_id)] == ["succeeded"]
    again = app.send_task(  # a late redelivery refunds nothing more
        task_names.PAYMENTS_REFUND,
        args=[charge_id],
        kwargs={"amount": "25.00", "idempotency_key": key},
    ).get(timeout=60)
    assert again["status"] == "succeeded" and again["balance"] == "35.00"
    assert r.remote_refunds(key) == 1
    s.audit_ok()


def test_concurrent_janitors_remind_and_expire_each_waiting_refund_once(fleet: Fleet) -> None:
    """Bank-transfer refunds waiting for details, swept by many `balance.refunds.sync`
    messages at once on two workers: one reminder each, then one failure each (money back
    once), however many janitors run."""
    from tests.refunds.test_bank_refunds import _paid_bank_charge

    fleet.start_worker(concurrency=3)
    fleet.start_worker(concurrency=3)
    fleet.wait_ready()
    waiting = []
    for amount in ("10.00", "20.00", "30.00"):
        account_id, charge_id = _paid_bank_charge("100.00")
        assert r.refund(charge_id, amount)["status"] == "requires_details"
        waiting.append((account_id, charge_id))

    def sweep(moment: datetime) -> list[dict[str, int]]:
        jobs = [
            app.signature(task_names.REFUNDS_SYNC, kwargs={"as_of": moment.isoformat()})
            for _ in range(6)
        ]
        results: list[dict[str, int]] = group(jobs).apply_async().get(timeout=90)
        return results

    reminded = sweep(now() + timedelta(days=8))
    assert sum(res["reminded"] for res in reminded) == 3, reminded
    assert len(s.mails("refund.details_reminder")) == 3
    expired = sweep(now() + timedelta(days=31))
    assert sum(res["expired"] for res in expired) == 3, expired
    assert len(s.events("refund.failed")) == 3
    for account_id, charge_id in waiting:
        [row] = r.rows(charge_id)
        assert (row.status, row.failure_code, row.needs_attention) == (
            "failed",
            "details_not_received",
            True,
        )
        assert s.get_account(account_id).balance == Decimal("100.00")
    s.audit_ok()
