"""What the auto-reload tests share: the beat tick run in-process, and reads of an account's
charges, events and mails as plain detached rows (tests/auto_reload/*)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import time_machine
from sqlalchemy import select

from worker.accounts import service as accounts
from worker.auto_reload import batch
from worker.auto_reload import sweep as sweeps
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.ledger.models import Account
from worker.outbox.models import Event, Mail

SWEEP = timedelta(minutes=6)  # AUTO_RELOAD_INTERVAL


def sweep(at: datetime) -> int:
    """One beat tick: the sweep as of `at`, then the reload batches it queued, each run as a
    worker would run the message, with the real clock at `at` too. Returns `due`."""
    sent: list[Any] = []
    with (
        time_machine.travel(at, tick=False),
        unit_of_work(dispatch=lambda n, a, k: sent.append((n, a, k))) as uow,
    ):
        due = sweeps.sweep(uow, at)["due"]
    for name, args, kwargs in sent:
        assert name == task_names.AUTO_RELOAD_RELOAD_BATCH
        with time_machine.travel(at, tick=False), unit_of_work() as uow:
            batch.reload_batch(uow, args[0], parse_as_of(kwargs["as_of"]), budget_seconds=60)
    return int(due)


def get(account_id: str) -> Account:
    with unit_of_work() as uow:
        account = accounts.get(uow.session, account_id)
        uow.session.expunge(account)
        return account


def charges(account_id: str) -> list[Charge]:
    """The account's charges, oldest first."""
    with unit_of_work() as uow:
        rows = list(
            uow.session.scalars(
                select(Charge).where(Charge.account_id == account_id).order_by(Charge.created_at)
            )
        )
        uow.session.expunge_all()
        return rows


def events(account_id: str, type_: str) -> list[Event]:
    """The account's events of `type_`, oldest first."""
    with unit_of_work() as uow:
        rows = list(
            uow.session.scalars(
                select(Event)
                .where(Event.account_id == account_id, Event.type == type_)
                .order_by(Event.occurred_at)
            )
        )
        uow.session.expunge_all()
        return rows


def mails(account_id: str, kind: str | None = None) -> list[Mail]:
    """The account's mails (of `kind`, when given)."""
    query = select(Mail).where(Mail.account_id == account_id)
    if kind is not None:
        query = query.where(Mail.kind == kind)
    with unit_of_work() as uow:
        rows = list(uow.session.scalars(query))
        uow.session.expunge_all()
        return rows
