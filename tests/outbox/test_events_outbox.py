"""Transactional outbox: events commit with the change, the relay publishes each one once."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import text

from config import get_settings
from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.outbox import events
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

MESSAGE_KEYS = {"id", "type", "account_id", "occurred_at", "data"}


def new_account() -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name="Acme", now=now())["id"])


def credit(account_id: str, amount: str) -> dict[str, Any]:
    with unit_of_work() as uow:
        return adjustments.adjust(
            uow, account_id=account_id, amount=amount, reason="seed", now=now()
        )


def make_events(count: int) -> list[str]:
    """`count` committed events (plain outbox rows), oldest first."""
    ids = []
    start = now()
    with unit_of_work() as uow:
        for i in range(count):
            at = start + timedelta(microseconds=i)
            ids.append(events.record(uow, "test.happened", f"acc_{i % 7}", {"n": i}, at).id)
    return ids


def relay(publish: Any) -> int:
    with unit_of_work() as uow:
        return events.relay(uow, publish, now())


def unpublished() -> list[str]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                text("SELECT id FROM events WHERE published_at IS NULL ORDER BY occurred_at, id")
            )
        )


def test_events_commit_with_the_change_and_roll_back_with_it() -> None:
    account_id = new_account()
    credit(account_id, "1")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount="1", reference="m1", now=now())
        uow.session.flush()
        pending = uow.session.scalar(
            text("SELECT count(*) FROM events WHERE type = 'account.depleted'")
        )
        assert pending == 1  # written inside the same transaction as the debit
        raise Boom

    with unit_of_work() as uow:
        assert (
            uow.session.scalar(text("SELECT count(*) FROM events WHERE type = 'account.depleted'"))
            == 0
        )
        assert (
            uow.session.scalar(
                text("SELECT count(*) FROM ledger_transactions WHERE kind = 'usage_debit'")
            )
            == 0
        )
        status = uow.session.scalar(
            text("SELECT status FROM accounts WHERE id = :id"), {"id": account_id}
        )
    assert status == "active"


def test_relay_is_only_enqueued_after_commit() -> None:
    account_id = new_account()
    sent: list[str] = []

    def dispatch(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sent.append(name)

    with pytest.raises(RuntimeError), unit_of_work(dispatch=dispatch) as uow:
        adjustments.adjust(uow, account_id=account_id, amount="1", reason="x", now=now())
        raise RuntimeError("rolled back")
    assert sent == []

    with unit_of_work(dispatch=dispatch) as uow:
        adjustments.adjust(uow, account_id=account_id, amount="1", reason="x", now=now())
        assert sent == []  # not before COMMIT
    assert sent == [events.RELAY_TASK]  # once, however many events the transaction wrote


def test_relay_publishes_each_committed_event_once_in_contract_shape() -> None:
    account_id = new_account()
    credit(account_id, "2")
    with unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount="2", reference="m1", now=now())
    credit(account_id, "3")

    published: list[dict[str, Any]] = []
    assert relay(published.append) == 4
    types = [m["type"] for m in published]
    # Oldest first; the two events of the last transaction share its timestamp.
    assert types[:2] == ["balance.adjusted", "account.depleted"]
    assert sorted(types[2:]) == ["account.reactivated", "balance.adjusted"]
    for message in published:
        assert set(message) == MESSAGE_KEYS
        assert isinstance(message["id"], str)
        assert message["account_id"] == account_id
        moment = datetime.fromisoformat(message["occurred_at"])
        assert moment.utcoffset() is not None
        assert isinstance(message["data"], dict)
        json.dumps(message)  # JSON-serialisable as is
    assert published[0]["data"]["amount"] == "2.00"
    assert len({m["id"] for m in published}) == 4

    assert unpublished() == []
    again: list[dict[str, Any]] = []
    assert relay(again.append) == 0
    assert again == []


def test_failed_publish_loses_nothing_and_repeats_nothing() -> None:
    ids = make_events(5)
    seen: list[str] = []

    def flaky(message: dict[str, Any]) -> None:
        if len(seen) == 2:
            raise ConnectionError("broker went away")
        seen.append(message["id"])

    with pytest.raises(ConnectionError):
        relay(flaky)
    assert seen == ids[:2]
    assert unpublished() == ids[2:]  # the two that went out are marked
    with unit_of_work() as uow:
        attempts = uow.session.scalar(
            text("SELECT publish_attempts FROM events WHERE id = :id"), {"id": ids[2]}
        )
    assert attempts == 1

    rest: list[str] = []
    assert relay(lambda m: rest.append(m["id"])) == 3
    assert rest == ids[2:]
    assert unpublished() == []


def test_relay_works_through_more_than_one_batch() -> None:
    ids = make_events(450)
    seen: list[str] = []
    with unit_of_work() as uow:
        assert events.relay(uow, lambda m: seen.append(m["id"]), now(), batch_size=100) == 450
    assert seen == ids
    assert unpublished() == []


def test_two_concurrent_relays_publish_each_event_exactly_once() -> None:
    ids = make_events(600)
    seen: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    counts: list[int] = []

    def publish(message: dict[str, Any]) -> None:
        with lock:
            seen.append(message["id"])
        time.sleep(0.0002)  # widen the window in which both relays are busy

    def run() -> None:
        barrier.wait()
        try:
            with unit_of_work() as uow:
                counts.append(events.relay(uow, publish, now(), batch_size=50))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    duplicates = [i for i, n in Counter(seen).items() if n > 1]
    assert duplicates == []
    assert sorted(seen) == sorted(ids)
    assert sum(counts) == 600
    assert unpublished() == []


def _decode(raw: bytes) -> dict[str, Any]:
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    return {
        "task": envelope["headers"]["task"],
        "id": envelope["headers"]["id"],
        "args": args,
        "kwargs": kwargs,
    }


def test_celery_relay_task_publishes_to_the_events_queue(broker_url: str) -> None:
    from worker.celery import app

    app.loader.import_default_modules()
    settings = get_settings()
    client = redis.Redis.from_url(broker_url)
    client.delete(settings.events_queue)

    account_id = new_account()
    result = credit(account_id, "5")

    bound = {"paused": False, "queue_max": settings.events_queue_max}
    # The queue was empty when the relay looked before its one batch.
    assert app.tasks["balance.events.relay"]() == {"published": 1, "queue_length": 0, **bound}
    raw = client.lrange(settings.events_queue, 0, -1)
    assert len(raw) == 1
    message = _decode(raw[0])
    assert message["task"] == settings.events_task
    assert message["kwargs"] == {}
    [event] = message["args"]
    assert set(event) == MESSAGE_KEYS
    assert event["type"] == "balance.adjusted"
    assert event["account_id"] == account_id
    assert event["data"]["transaction_id"] == result["transaction_id"]
    assert message["id"] == event["id"]  # a republished event carries the same message id
    assert unpublished() == []

    # Running the relay again publishes nothing new.
    assert app.tasks["balance.events.relay"]() == {"published": 0, "queue_length": 1, **bound}
    assert client.llen(settings.events_queue) == 1
    client.delete(settings.events_queue)
