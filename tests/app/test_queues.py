"""Routing: a task reaches exactly one queue, also after workers declared their queues."""

from __future__ import annotations

import pytest
import redis

from tests.fleet_support import Fleet
from worker.celery import app

pytestmark = pytest.mark.fleet


def test_each_task_lands_in_exactly_one_queue(fleet: Fleet, broker_url: str) -> None:
    worker = fleet.start_worker(concurrency=1)
    fleet.wait_ready()  # the worker has declared and bound both of its queues
    worker.kill()
    worker.proc.wait(20)
    client = redis.Redis.from_url(broker_url)
    client.delete("balance", "balance.urgent", "balance.bulk", "balance.outbox")

    app.send_task("balance.usage.debit", args=["acc_v", "1.00", "ref"])
    app.send_task("balance.events.relay")
    app.send_task("balance.mail.send_pending")
    app.send_task("balance.auto_reload.reload_now", args=["acc_x"])
    app.send_task("balance.auto_reload.reload", args=["acc_y"])
    app.send_task("balance.auto_reload.reload_batch", args=[["acc_z", "acc_w"]])

    assert client.llen("balance") == 1  # debits, top-ups, jobs
    assert client.llen("balance.urgent") == 1  # the reload of the debit that crossed
    assert client.llen("balance.bulk") == 2  # a sweep's reloads
    assert client.llen("balance.outbox") == 2  # outbox nudges: never "interactive work waiting"
