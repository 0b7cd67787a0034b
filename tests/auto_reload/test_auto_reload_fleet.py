"""Auto-reload with two real worker processes, Redis and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from celery import group
from sqlalchemy import func, select

from tests.fleet_support import Fleet, wait_for
from worker.accounts import service as accounts
from worker.auto_reload import configure
from worker.celery import app
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.ledger.models import Account, LedgerTransaction
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.fleet


def _reload_account(threshold: str, amount: str, balance: str = "0") -> str:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="fleet reload", now=now())["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{uuid.uuid4().hex}",
            now=now(),
        )
    if balance != "0":
        with unit_of_work() as uow:
            adjustments.adjust(uow, account_id=account_id, amount=balance, reason="seed", now=now())
    with unit_of_work() as uow:
        configure.configure(
            uow, account_id=account_id, threshold=threshold, amount=amount, now=now()
        )
    return account_id


def _counts() -> tuple[int, int]:
    with unit_of_work() as uow:
        charged = (
            uow.session.scalar(
                select(func.count())
                .select_from(Charge)
                .where(Charge.purpose == "auto_reload", Charge.status == "succeeded")
            )
            or 0
        )
        credits = (
            uow.session.scalar(
                select(func.count())
                .select_from(LedgerTransaction)
                .where(LedgerTransaction.kind == "charge")
            )
            or 0
        )
    return int(charged), int(credits)


def test_two_hundred_due_accounts_five_concurrent_sweeps_exactly_two_hundred_charges(
    fleet: Fleet,
) -> None:
    ids = [_reload_account("10", "25") for _ in range(200)]
    # configure() nudges each already-due account; drop those nudges so the sweeps do the work.
    import redis

    from config import get_settings

    redis.Redis.from_url(get_settings().effective_broker_url).delete("balance.urgent")
    # Five sweeps are queued before any worker runs, so they start together and race.
    as_of = now().isoformat()
    pending = group(
        app.signature("balance.auto_reload.sweep", kwargs={"as_of": as_of}) for _ in range(5)
    ).apply_async()
    fleet.start_worker(concurrency=4)
    fleet.start_worker(concurrency=4)
    fleet.wait_ready()
    sweeps = pending.get(timeout=60)
    assert all(0 <= s["due"] <= 200 for s in sweeps)
    assert max(s["due"] for s in sweeps) == 200  # the first saw every due account
    wait_for(lambda: _counts() == (200, 200), 120, "200 charges and 200 credits")
    time.sleep(2)  # any straggling duplicate reload would land now
    assert _counts() == (200, 200)
    with unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Charge)) == 200
        balances = set(uow.session.scalars(select(Account.balance).where(Account.id.in_(ids))))
    assert balances == {Decimal("25.00")}


def test_debit_crossing_the_threshold_is_reloaded_within_seconds(fleet: Fleet) -> None:
    fleet.start_worker(concurrency=2)
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    account_id = _reload_account("10", "20", balance="10.50")
    started = time.monotonic()
    debit = app.send_task("balance.usage.debit", args=[account_id, "1.00", "cross-1"])
    assert debit.get(timeout=30)["balance"] == "9.50"

    def reloaded() -> bool:
        with unit_of_work() as uow:
            return accounts.get(uow.session, account_id).balance == Decimal("29.50")

    wait_for(reloaded, 10, "the on-debit reload")
    assert time.monotonic() - started < 10


def test_decline_backoff_disable_through_the_workers_with_as_of(fleet: Fleet) -> None:
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    account_id = _reload_account("10", "2001.00")  # Braintree sandbox: declined, code 2001
    import redis

    from config import get_settings

    redis.Redis.from_url(get_settings().effective_broker_url).delete("balance.urgent")
    t0 = now() + timedelta(minutes=1)

    def sweep_and_wait(at: object, expect_due: int) -> None:
        result = app.send_task("balance.auto_reload.sweep", kwargs={"as_of": at.isoformat()}).get(
            timeout=30
        )  # type: ignore[attr-defined]
        assert result["due"] == expect_due

    def declines() -> int:
        with unit_of_work() as uow:
            return accounts.get(uow.session, account_id).auto_reload_declines

    for attempt in range(1, 4):
        sweep_and_wait(t0, 1)
        wait_for(lambda attempt=attempt: declines() == attempt, 30, f"decline {attempt}")
        if attempt < 3:
            sweep_and_wait(t0 + timedelta(minutes=30), 0)  # backing off
        t0 += timedelta(hours=1, minutes=1)
    with unit_of_work() as uow:
        account = accounts.get(uow.session, account_id)
        assert account.auto_reload_enabled is False
        assert account.balance == Decimal("0")
    sweep_and_wait(t0 + timedelta(days=1), 0)


def test_an_on_debit_reload_does_not_wait_behind_a_sweeps_slow_backlog(fleet: Fleet) -> None:
    """Two worker processes, a PSP answering in 300 ms, 80 due accounts: two batches of 40,
    12 s each if run to the end, would hold both processes until the backlog is done. Each
    hands its rest on at a chunk boundary once the debit (then its reload) is queued, so
    both find a process while the backlog is still running."""
    import redis

    from config import get_settings

    due = [_reload_account("10", "20") for _ in range(80)]
    crossing = _reload_account("10", "20", balance="10.50")
    redis.Redis.from_url(get_settings().effective_broker_url).delete("balance.urgent")
    fleet.start_worker(concurrency=2, extra_env={"PSP_STUB_LATENCY_MS": "300"})
    fleet.wait_ready()
    assert app.send_task("balance.auto_reload.sweep").get(timeout=30)["due"] == 80

    def charged(ids: list[str]) -> int:
        with unit_of_work() as uow:
            return int(
                uow.session.scalar(
                    select(func.count())
                    .select_from(Charge)
                    .where(Charge.account_id.in_(ids), Charge.status == "succeeded")
                )
                or 0
            )

    wait_for(lambda: charged(due) >= 2, 30, "the backlog to start")
    app.send_task("balance.usage.debit", args=[crossing, "1.00", "cross-behind-backlog"])
    wait_for(lambda: charged([crossing]) == 1, 60, "the on-debit reload")
    wait_for(lambda: charged(due) == 80, 120, "the backlog to finish")
    # When the PSP was called, on the real clock (the sweep's charges carry its `as_of`).
    from worker.psp.sandbox import remote_charges

    def called_at(account_ids: list[str]) -> list[Any]:
        keys = [f"auto_reload:{a}:1" for a in account_ids]
        with unit_of_work() as uow:
            return list(
                uow.session.scalars(
                    select(remote_charges.c.created_at).where(
                        remote_charges.c.idempotency_key.in_(keys)
                    )
                )
            )

    [crossing_called] = called_at([crossing])
    backlog_called = called_at(due)
    assert len(backlog_called) == 80
    # It did not wait for the backlog: a good part of the backlog went to the PSP after it.
    assert sum(1 for at in backlog_called if at > crossing_called) >= 20
    with unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Charge)) == 81
