"""The monitor never shows a card number (issue 11, item 10), through a real worker and Flower.

A caller that did not install worker.client's hook sends a debit whose description holds a
card number: the message in Redis carries it (only the sender can prevent that), but what
our worker reports, and so what Flower shows, is redacted.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from celery import Celery

from config import get_settings
from tests.app.test_flower import running_flower
from tests.fleet_support import Fleet
from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.redaction import REDACTED
from worker.ledger import adjustments

pytestmark = pytest.mark.fleet

CARD = "4111 1111 1111 1111"


def _leaks(text: str) -> bool:
    return CARD.replace(" ", "") in re.sub(r"[\s-]", "", text)


def test_flower_shows_a_careless_callers_card_number_redacted(
    fleet: Fleet, tmp_path: Path, broker_url: str
) -> None:
    with unit_of_work() as uow:
        account_id = str(accounts.create(uow, name="Monitor", now=now())["id"])
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="10", reason="funds", now=now())
    caller = Celery(f"caller-{uuid.uuid4().hex[:8]}", broker=broker_url, set_as_current=False)
    worker = fleet.start_worker(concurrency=1)
    fleet.wait_ready()

    with running_flower(tmp_path, ["--basic-auth=user:secret"]) as flower:
        flower.poll(lambda: worker.name in flower.api("/api/workers?refresh=1"), 15, "the worker")
        sent: list[str] = []

        def succeeded() -> bool:
            tasks = flower.api("/api/tasks")
            return any(tasks.get(t, {}).get("state") == "SUCCESS" for t in sent)

        # Flower subscribes in the background: a task done before that is never seen.
        for n in range(3):
            sent.append(
                caller.send_task(
                    "balance.usage.debit",
                    args=[account_id, "0.01", f"msg-{n}"],
                    kwargs={"description": f"customer read out {CARD}"},
                    queue=get_settings().task_queue,
                ).id
            )
            try:
                flower.poll(succeeded, 8, f"one of {sent} SUCCESS in /api/tasks")
                break
            except AssertionError:
                if n == 2 or flower.proc.poll() is not None:
                    raise
        tasks = flower.api("/api/tasks")
        shown = next(tasks[t] for t in sent if tasks.get(t, {}).get("state") == "SUCCESS")
        assert shown["name"] == "balance.usage.debit"
        assert account_id in shown["args"]
        assert REDACTED in shown["kwargs"]
        assert not _leaks(str(shown)), shown
    assert not _leaks(worker.output()), "the worker's log"
