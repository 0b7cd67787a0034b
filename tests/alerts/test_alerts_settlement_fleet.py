"""Low-balance alerts and settlement roll-forward with two real worker processes.

Concurrent runs of the same periodic job (a beat tick plus a manual run, a redelivery)
must act once per account / per charge: the tasks are queued before any worker starts,
so they are picked up together and race for the same rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery import group
from sqlalchemy import func, select

from tests.fleet_support import Fleet, wait_for
from tests.smtp_server import HOST, Recorder, running
from worker.accounts import service as accounts
from worker.alerts import service as alerts
from worker.celery import app
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel.clock import now, parse_as_of
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.ledger.models import Account, LedgerTransaction
from worker.outbox.models import Event, Mail
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.fleet

ALERTED = 60
QUIET = 10  # alerts configured, balance above the threshold: must never fire
CHARGES = 40


def _count(model: Any, *where: Any) -> int:
    with unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# --- alerts -----------------------------------------------------------------------------------


def _alert_account(i: int, balance: str, threshold: str) -> tuple[str, list[str]]:
    emails = [f"ops{i}@example.com", f"cfo{i}@example.org"]
    with unit_of_work() as uow:
        account_id: str = accounts.create(uow, name=f"Fleet Alert {i}", emails=emails, now=now())[
            "id"
        ]
    if balance != "0":
        with unit_of_work() as uow:
            adjustments.adjust(uow, account_id=account_id, amount=balance, reason="seed", now=now())
    with unit_of_work() as uow:
        alerts.configure(uow, account_id=account_id, threshold=threshold, now=now())
    return account_id, emails


def test_five_concurrent_scans_alert_and_mail_each_account_once(fleet: Fleet) -> None:
    low = dict(
        _alert_account(i, balance=("0" if i % 2 else "4.99"), threshold="5") for i in range(ALERTED)
    )
    quiet = [_alert_account(1000 + i, balance="5", threshold="5")[0] for i in range(QUIET)]

    recorder = Recorder()
    with running(recorder) as port:
        # Three runs of the same tick (as_of given) and two "now" runs, all queued first.
        as_of = now().isoformat()
        pending = group(
            [app.signature("balance.alerts.scan", kwargs={"as_of": as_of}) for _ in range(3)]
            + [app.signature("balance.alerts.scan", kwargs={"as_of": None}) for _ in range(2)]
        ).apply_async()
        env = {
            "SMTP_HOST": HOST,
            "SMTP_PORT": str(port),
            "SMTP_TIMEOUT_SECONDS": "5",
            "MAIL_FROM": "Billing <billing@example.net>",
            # Small batches: each scan commits several times while the others wait on its locks.
            "ALERT_BATCH_SIZE": "7",
        }
        fleet.start_worker(concurrency=3, extra_env=env)
        fleet.start_worker(concurrency=3, extra_env=env)
        fleet.wait_ready()
        scans = pending.get(timeout=60)

        assert sum(s["alerted"] for s in scans) == ALERTED
        assert all(s["rearmed"] == 0 and s["checked"] == s["alerted"] for s in scans)

        with unit_of_work() as uow:
            fired = Counter(
                uow.session.scalars(select(Event.account_id).where(Event.type == alerts.KIND))
            )
            queued = Counter(
                uow.session.scalars(select(Mail.account_id).where(Mail.kind == alerts.KIND))
            )
            states = dict(
                uow.session.execute(
                    select(Account.id, Account.alert_state).where(Account.id.in_([*low, *quiet]))
                ).all()
            )
        assert fired == Counter(list(low))  # exactly one balance.low event per account, none else
        assert queued == Counter(list(low))  # exactly one mail per account
        assert {states[a] for a in low} == {"sent"}
        assert {states[a] for a in quiet} == {"armed"}

        # The scans nudged balance.mail.send_pending after commit: it delivers through SMTP.
        wait_for(lambda: len(recorder.received) >= ALERTED, 30, f"{ALERTED} mails at the server")
        time.sleep(3)  # a duplicate send (a second sender, a second nudge) would land now
        received = list(recorder.received)
    assert len(received) == ALERTED

    # Every account's two addresses got exactly one message, together.
    everyone = Counter(address for r in received for address in r.rcpt_tos)
    assert everyone == Counter(address for emails in low.values() for address in emails)
    expected_sets = {frozenset(emails) for emails in low.values()}
    assert {frozenset(r.rcpt_tos) for r in received} == expected_sets
    # One message per outbox row (the Message-ID is derived from the row id).
    with unit_of_work() as uow:
        rows = list(uow.session.scalars(select(Mail).where(Mail.kind == alerts.KIND)))
    ids = sorted(str(r.message["Message-ID"]) for r in received)
    assert ids == sorted(f"<{m.id}@example.net>" for m in rows)
    assert {m.status for m in rows} == {"sent"}
    assert {m.attempts for m in rows} == {1}
    assert {m.transport for m in rows} == {"smtp"}


# --- settlement -------------------------------------------------------------------------------


def _charged_account(i: int) -> str:
    with unit_of_work() as uow:
        account_id: str = accounts.create(uow, name=f"Fleet Settle {i}", now=now())["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{uuid.uuid4().hex}",
            now=now(),
        )
    return account_id


def _settlement_view() -> dict[str, Any]:
    with unit_of_work() as uow:
        statuses = dict(uow.session.execute(select(Charge.id, Charge.settlement_status)).all())
        transfers = Counter(
            uow.session.scalars(
                select(LedgerTransaction.reference).where(
                    LedgerTransaction.kind == "settlement",
                    LedgerTransaction.account_id.is_(None),
                )
            )
        )
        available = [
            e.data
            for e in uow.session.scalars(select(Event).where(Event.type == "funds.available"))
        ]
        system = ledger.system_balances(uow.session, "psp_")
    return {
        "statuses": statuses,
        "transfers": transfers,
        "available": available,
        "system": system,
    }


def test_four_concurrent_roll_forwards_settle_each_charge_once(fleet: Fleet) -> None:
    # Forty succeeded charges through the real charge path (begin, PSP sandbox, apply,
    # which credits the customer and schedules the settlement in the same transaction).
    account_ids = [_charged_account(i) for i in range(CHARGES // 2)]
    created: dict[str, Decimal] = {}
    for n in range(CHARGES):
        amount = Decimal("10.00") + Decimal(n) / 4
        with unit_of_work() as uow:
            result = top_ups.top_up(
                uow,
                account_id=account_ids[n % len(account_ids)],
                amount=str(amount),
                idempotency_key=f"settle-{n}-{uuid.uuid4().hex[:8]}",
            )
        assert result["status"] == "succeeded"
        assert result["settlement_status"] == "pending"
        created[result["charge_id"]] = amount
    total = sum(created.values(), Decimal(0))
    with unit_of_work() as uow:
        rows = list(uow.session.scalars(select(Charge)))
        currency = rows[0].currency
    assert {c.id for c in rows} == set(created)
    assert {c.settlement_status for c in rows} == {"pending"}
    last_due = max(c.settles_at for c in rows if c.settles_at is not None)
    assert all(c.settles_at is not None for c in rows)

    # Two weeks later everything is due; four runs of that tick race for it.
    as_of = now() + timedelta(days=14)
    assert last_due <= as_of
    pending = group(
        app.signature("balance.settlement.roll_forward", kwargs={"as_of": as_of.isoformat()})
        for _ in range(4)
    ).apply_async()
    env = {"SETTLEMENT_BATCH_SIZE": "3"}  # many small batches, so the runs interleave
    fleet.start_worker(concurrency=2, extra_env=env)
    fleet.start_worker(concurrency=2, extra_env=env)
    fleet.wait_ready()
    runs = pending.get(timeout=60)

    assert sum(r["settled"] for r in runs) == CHARGES
    booked = sum(
        (Decimal(a["amount"]) for r in runs for a in r["amounts"]),
        Decimal(0),
    )
    assert booked == total
    view = _settlement_view()
    assert view["statuses"] == dict.fromkeys(created, "available")
    assert view["transfers"] == Counter(list(created))  # one settlement transfer per charge
    assert Counter(d["charge_id"] for d in view["available"]) == Counter(list(created))
    assert {Decimal(d["amount"]) for d in view["available"]} == set(created.values())
    # The receivable moved in full: nothing left pending, everything available.
    assert view["system"][(f"psp_pending:braintree:{currency}", currency)] == 0
    assert view["system"][(f"psp_available:braintree:{currency}", currency)] == -total
    with unit_of_work() as uow:
        settled_at = set(uow.session.scalars(select(Charge.settled_at)))
    assert settled_at == {parse_as_of(as_of.isoformat())}

    # A later run (a redelivery, the next tick) finds nothing left to do.
    again = app.send_task(
        "balance.settlement.roll_forward",
        kwargs={"as_of": (as_of + timedelta(days=1)).isoformat()},
    ).get(timeout=30)
    assert again["settled"] == 0
    assert _count(LedgerTransaction, LedgerTransaction.kind == "settlement") == CHARGES
    assert _count(Event, Event.type == "funds.available") == CHARGES

    audit = subprocess.run(
        [str(Path(sys.executable).with_name("balancectl")), "audit", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["ok"] is True
    assert report["transactions_checked"] == 2 * CHARGES  # 40 credits + 40 settlements
