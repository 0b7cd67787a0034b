"""Nothing we feed grows without bound (issue 11, item 5), against real Redis and PostgreSQL.

- The relay stops filling the events queue at EVENTS_QUEUE_MAX, keeps the rest in the
  outbox, says so once per episode, and resumes by itself; nothing is lost or doubled.
- Published events and finished mails are deleted after their retention, as of `as_of`
  (time-machine moves the clock), in batches, through indexes; nothing else is touched.
- The embedded broker: its queue is measured, and its delivered messages are deleted.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis
import time_machine
from sqlalchemy import text

from config import get_settings, reset_settings
from tests.cli.test_cli import ok_json
from worker import events_bound
from worker.db.session import unit_of_work
from worker.outbox import events, retention
from worker.outbox import mail as mail_service
from worker.outbox.mail import MessageRejected

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
FILLER = b"not an event: a message some consumer has not taken yet"


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def broker(broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """The test session's Redis db, with an events queue of this test's own (so nothing else
    relaying into `events` on this Redis can touch it), empty, and no backlog episode."""
    client = redis.Redis.from_url(broker_url)
    queue = f"events-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("EVENTS_QUEUE", queue)
    reset_settings()
    client.delete(queue, episode_key())
    yield client
    client.delete(queue, episode_key())


def episode_key() -> str:
    return events_bound.episode_key(get_settings().events_queue)


def make_events(count: int, at: datetime | None = None) -> list[str]:
    start = at or datetime.now(UTC)
    with unit_of_work() as uow:
        moments = [start + timedelta(microseconds=i) for i in range(count)]
        return [events.record(uow, "test.happened", "acc_1", {}, at).id for at in moments]


def unpublished() -> list[str]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                text("SELECT id FROM events WHERE published_at IS NULL ORDER BY occurred_at, id")
            )
        )


def queued_event_ids(client: redis.Redis) -> list[str]:
    """Ids of the events in the events queue (fillers skipped), in publishing order."""
    ids = []
    # LPUSH puts the newest at the head: read tail to head for publishing order.
    for raw in reversed(client.lrange(get_settings().events_queue, 0, -1)):
        if raw == FILLER:
            continue
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        [event], _kwargs, _embed = json.loads(body)
        ids.append(event["id"])
    return ids


def fill(client: redis.Redis, count: int) -> None:
    if count:
        client.lpush(get_settings().events_queue, *([FILLER] * count))


def drain_fillers(client: redis.Redis) -> None:
    client.lrem(get_settings().events_queue, 0, FILLER)


def relay_task() -> dict[str, Any]:
    from worker.celery import app

    app.loader.import_default_modules()
    result: dict[str, Any] = app.tasks["balance.events.relay"]()
    return result


def set_max(monkeypatch: pytest.MonkeyPatch, value: int) -> None:
    monkeypatch.setenv("EVENTS_QUEUE_MAX", str(value))
    reset_settings()


# --- the relay's bound -----------------------------------------------------------------------


def test_relay_stops_at_the_max_keeps_the_rest_and_resumes_when_consumers_catch_up(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_max(monkeypatch, 10)
    ids = make_events(5)
    fill(broker, 8)  # consumers are behind: 8 messages wait

    result = relay_task()
    # Room for 2: the oldest two go out, the queue is full, three stay in the outbox.
    assert result == {"published": 2, "paused": True, "queue_length": 10, "queue_max": 10}
    assert broker.llen(get_settings().events_queue) == 10
    assert queued_event_ids(broker) == ids[:2]
    assert unpublished() == ids[2:]

    fill(broker, 1)  # above the max now
    assert relay_task() == {"published": 0, "paused": True, "queue_length": 11, "queue_max": 10}
    assert unpublished() == ids[2:]

    drain_fillers(broker)  # the consumers catch up
    result = relay_task()
    assert result == {"published": 3, "paused": False, "queue_length": 2, "queue_max": 10}
    assert unpublished() == []
    # Every event went out exactly once, oldest first.
    assert queued_event_ids(broker) == ids


def test_relay_above_the_default_max_publishes_nothing(broker: redis.Redis) -> None:
    maximum = get_settings().events_queue_max
    assert maximum == 100_000
    ids = make_events(3)
    for _ in range(10):
        fill(broker, (maximum + 1) // 10)
    fill(broker, (maximum + 1) % 10)
    assert broker.llen(get_settings().events_queue) == maximum + 1

    assert relay_task() == {
        "published": 0,
        "paused": True,
        "queue_length": maximum + 1,
        "queue_max": maximum,
    }
    assert unpublished() == ids
    broker.ltrim(get_settings().events_queue, 0, maximum - 3)  # room for 2
    assert relay_task()["published"] == 2
    assert unpublished() == ids[2:]


def test_one_warning_per_backlog_episode_not_one_per_run(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    set_max(monkeypatch, 3)
    caplog.set_level(logging.INFO, logger=events_bound.__name__)

    def lines(word: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if word in r.getMessage()]

    fill(broker, 3)
    make_events(2)
    for _ in range(4):  # beat every 30 s while the consumers are away
        assert relay_task()["paused"] is True
    assert len(lines("events relay paused")) == 1
    assert "holds 3 messages" in lines("events relay paused")[0]
    assert lines("resumed") == []
    assert broker.exists(episode_key())

    # Consumers take one message at a time: the relay keeps topping up, still one episode.
    for _ in range(2):
        broker.rpop(get_settings().events_queue)
        relay_task()
    assert len(lines("events relay paused")) == 1
    assert unpublished() == []  # the last one went out: the backlog is over
    assert len(lines("events relay resumed")) == 1
    assert not broker.exists(episode_key())

    relay_task()  # nothing held back: no new line
    assert len(lines("events relay resumed")) == 1

    make_events(1)  # a second episode warns again
    relay_task()
    assert len(lines("events relay paused")) == 2


def test_a_full_queue_with_an_empty_outbox_warns_nothing(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    set_max(monkeypatch, 2)
    fill(broker, 2)
    caplog.set_level(logging.INFO, logger=events_bound.__name__)
    assert relay_task() == {"published": 0, "paused": True, "queue_length": 2, "queue_max": 2}
    assert [r for r in caplog.records if "events relay" in r.getMessage()] == []


def test_relay_publishes_nothing_when_the_queue_cannot_be_measured() -> None:
    ids = make_events(3)

    def broken() -> int | None:
        raise ConnectionError("broker went away")

    bound = events_bound.EventsQueueBound("events", 100, broken)
    published: list[str] = []
    with unit_of_work() as uow:
        assert events.relay(uow, lambda m: published.append(m["id"]), T0, room=bound.room) == 0
    assert published == []
    assert unpublished() == ids
    assert bound.result(0) == {
        "published": 0,
        "paused": True,
        "queue_length": None,
        "queue_max": 100,
    }


def test_relay_batches_never_overshoot_the_room() -> None:
    ids = make_events(25)
    waiting = [95]
    sizes: list[int] = []

    def measure() -> int:
        return waiting[0]

    def publish(message: dict[str, Any]) -> None:
        waiting[0] += 1

    bound = events_bound.EventsQueueBound("events", 100, measure)
    with unit_of_work() as uow:
        assert events.relay(uow, publish, T0, batch_size=3, room=lambda: _noted(bound, sizes)) == 5
    assert waiting[0] == 100
    assert sizes == [5, 2, 0]  # 3 + 2 published, then no room
    assert unpublished() == ids[5:]


def _noted(bound: events_bound.EventsQueueBound, sizes: list[int]) -> int | None:
    room = bound.room()
    sizes.append(room if room is not None else -1)
    return room


# --- retention -------------------------------------------------------------------------------


class Accepting:
    name = "log"

    def send(self, message: EmailMessage) -> dict[str, str]:
        return {}


class Refusing:
    name = "smtp"

    def send(self, message: EmailMessage) -> dict[str, str]:
        raise MessageRejected("550 no such user", permanent=True)


def published_events(count: int, at: datetime) -> list[str]:
    ids = make_events(count, at)
    with unit_of_work() as uow:
        events.relay(uow, lambda m: None, at)
    return ids


def mail_at(key: str, at: datetime, transport: Any | None = None) -> str:
    """A mail written at `at`; sent (or failed) at `at` through `transport` if given."""
    with unit_of_work() as uow:
        row = mail_service.queue(
            uow,
            dedupe_key=key,
            kind="test",
            subject="s",
            text_body="b",
            recipients=["alice@example.com"],
            now=at,
        )
        assert row is not None
        mail_id = row.id
    if transport is not None:
        with unit_of_work() as uow:
            mail_service.send_pending(uow, transport, get_settings(), at)
    return mail_id


def remaining(table: str) -> set[str]:
    with unit_of_work() as uow:
        return set(uow.session.scalars(text(f"SELECT id FROM {table}")))


def purge_task(as_of: datetime | None = None) -> dict[str, Any]:
    from worker.celery import app

    app.loader.import_default_modules()
    kwargs = {} if as_of is None else {"as_of": as_of.isoformat()}
    result: dict[str, Any] = app.tasks["balance.outbox.purge"](**kwargs)
    return result


def test_purge_deletes_only_what_went_out_and_is_old_enough() -> None:
    old_events = published_events(3, T0)
    recent_events = published_events(2, T0 + timedelta(days=20))
    never_published = make_events(2, T0 - timedelta(days=400))  # held back for ever: kept
    old_sent = mail_at("sent-old", T0, Accepting())
    recent_sent = mail_at("sent-recent", T0 + timedelta(days=20), Accepting())
    old_failed = mail_at("failed-old", T0, Refusing())
    pending = mail_at("pending-old", T0 - timedelta(days=400))
    with unit_of_work() as uow:
        # The refused mail wrote a mail.failed event; it is published with the rest later.
        mail_failed_events = set(
            uow.session.scalars(text("SELECT id FROM events WHERE type = 'mail.failed'"))
        )
    assert len(mail_failed_events) == 1

    # 30 days after T0 exactly: nothing is older than its retention yet.
    with time_machine.travel(T0 + timedelta(days=30), tick=False):
        assert purge_task() == {
            "events": 0,
            "mails_sent": 0,
            "mails_failed": 0,
            "broker_messages": 0,
            "more": False,
        }

    with time_machine.travel(T0 + timedelta(days=31), tick=False):
        result = purge_task()
    assert result == {
        "events": 3,
        "mails_sent": 1,
        "mails_failed": 0,  # failed mails are kept 90 days
        "broker_messages": 0,
        "more": False,
    }
    assert remaining("events") == set(recent_events) | set(never_published) | mail_failed_events
    assert not set(old_events) & remaining("events")
    assert remaining("mail_outbox") == {recent_sent, old_failed, pending}
    assert old_sent not in remaining("mail_outbox")

    with time_machine.travel(T0 + timedelta(days=91), tick=False):
        result = purge_task()
    assert (result["events"], result["mails_sent"], result["mails_failed"]) == (2, 1, 1)
    # Unpublished events and pending mails are never deleted, however old.
    assert remaining("events") == set(never_published) | mail_failed_events
    assert remaining("mail_outbox") == {pending}


def test_purge_takes_as_of_but_never_runs_ahead_of_the_clock() -> None:
    published_events(2, T0)
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        # A replay as of a later moment deletes nothing that is not old enough today.
        assert purge_task(T0 + timedelta(days=100))["events"] == 0
    with time_machine.travel(T0 + timedelta(days=100), tick=False):
        # As of an earlier moment: cutoffs follow as_of.
        assert purge_task(T0 + timedelta(days=29))["events"] == 0
        assert purge_task(T0 + timedelta(days=31))["events"] == 2


def test_retention_settings_move_the_cutoffs(monkeypatch: pytest.MonkeyPatch) -> None:
    published_events(1, T0)
    mail_at("sent", T0, Accepting())
    monkeypatch.setenv("EVENTS_RETENTION_DAYS", "7")
    monkeypatch.setenv("MAIL_RETENTION_DAYS", "3")
    reset_settings()
    with time_machine.travel(T0 + timedelta(days=5), tick=False):
        result = purge_task()
    assert (result["events"], result["mails_sent"]) == (0, 1)
    with time_machine.travel(T0 + timedelta(days=8), tick=False):
        assert purge_task()["events"] == 1


def test_purge_works_in_committed_batches_and_stops_at_its_budget() -> None:
    published_events(7, T0)
    later = T0 + timedelta(days=60)
    ticks = iter(range(100))
    with unit_of_work() as uow:
        # The clock moves one "second" per look; a budget of 3: two batches of 3, then stop.
        result = retention.purge(
            uow,
            later,
            retention.Retention.from_settings(get_settings()),
            batch_size=3,
            budget_seconds=3,
            monotonic=lambda: float(next(ticks)),
        )
    assert result == {"events": 6, "mails_sent": 0, "mails_failed": 0, "more": True}
    assert len(remaining("events")) == 1
    with unit_of_work() as uow:
        result = retention.purge(
            uow, later, retention.Retention.from_settings(get_settings()), batch_size=3
        )
    assert result["events"] == 1
    assert result["more"] is False
    assert remaining("events") == set()


def test_purge_removes_the_log_transports_mail_file(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    kept = mail_at("kept", T0 + timedelta(days=40), mail_service.LogTransport(folder))
    gone = mail_at("gone", T0, mail_service.LogTransport(folder))
    assert {p.name for p in folder.iterdir()} == {f"{kept}.eml", f"{gone}.eml"}
    with unit_of_work() as uow:
        retention.purge(
            uow,
            T0 + timedelta(days=31),
            retention.Retention.from_settings(get_settings()),
            mail_folder=folder,
        )
    assert {p.name for p in folder.iterdir()} == {f"{kept}.eml"}


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (retention.events_query, "ix_events_published"),
        (retention.sent_mails_query, "ix_mail_sent"),
        (retention.failed_mails_query, "ix_mail_failed"),
    ],
)
def test_purge_queries_are_backed_by_their_index(query: Any, index: str) -> None:
    with unit_of_work() as uow:
        uow.session.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = query(T0, 1000).compile(
            dialect=uow.session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(r[0] for r in uow.session.execute(text(f"EXPLAIN {compiled}")))
    assert index in plan, plan


def test_balancectl_jobs_run_purge(tmp_path: Path) -> None:
    published_events(2, T0)
    as_of = (T0 + timedelta(days=31)).isoformat()
    assert ok_json("jobs", "run", "purge", "--as-of", as_of) == {
        "events": 2,
        "mails_sent": 0,
        "mails_failed": 0,
        "broker_messages": 0,
        "more": False,
    }


# --- the embedded broker ---------------------------------------------------------------------


def test_embedded_broker_queue_is_measured_and_its_delivered_messages_are_deleted(
    tmp_path: Path,
) -> None:
    from celery import Celery

    from worker.db import embedded_broker

    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    app = Celery("embedded-test", broker=url)
    assert events_bound.queue_length(app, "events") == 0
    with app.connection_for_write() as conn:
        simple = conn.SimpleQueue("events")
        for n in range(5):
            simple.put({"n": n})
        simple.close()
    assert events_bound.queue_length(app, "events") == 5

    def take(count: int) -> list[int]:
        taken = []
        with app.connection_for_read() as conn:
            simple = conn.SimpleQueue("events")
            for _ in range(count):
                message = simple.get(timeout=5)
                taken.append(message.payload["n"])
                message.ack()
            simple.close()
        return taken

    assert take(3) == [0, 1, 2]
    assert events_bound.queue_length(app, "events") == 2

    # kombu keeps the three delivered rows; the purge deletes exactly those.
    assert embedded_broker.purge_delivered(url, batch_size=2) == (3, False)
    assert embedded_broker.purge_delivered(url) == (0, False)
    assert events_bound.queue_length(app, "events") == 2
    assert take(2) == [3, 4]
    app.pool.force_close_all()


def test_the_purge_leaves_a_redis_broker_alone() -> None:
    from worker.db import embedded_broker

    assert embedded_broker.purge_delivered(get_settings().effective_broker_url) == (0, False)
