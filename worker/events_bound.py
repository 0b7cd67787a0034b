"""The relay's bound on the events queue (`EVENTS_QUEUE_MAX`).

Nothing of ours consumes the events queue (other services do), and the compose Redis runs
`noeviction`: a queue that grows until Redis is out of memory stops the broker for the whole
fleet. So the relay measures the queue before each batch and stops publishing at
`EVENTS_QUEUE_MAX` messages; the events it holds back stay in the outbox (PostgreSQL, the
truth) and go out once the consumers catch up (beat runs the relay every 30 s).

- Redis and the embedded SQLite broker (kombu's virtual transports) report a queue's length:
  Redis the lengths of the queue's lists, the SQLite broker its undelivered rows.
- AMQP (RabbitMQ) does not report it through kombu's pool here: the relay publishes without
  this bound and warns once per process; bound the queue in RabbitMQ (a max-length policy).
- A measurement that fails (broker unreachable, timeout) publishes nothing in that run: a
  relay that cannot see the queue cannot know it has room, and the events wait safely in
  the outbox. The warning is rate-limited to once a minute per process.

A backlog episode starts when a run holds events back and ends when a run leaves none
behind: one warning when it starts, one info line when it ends, for the whole fleet (a key
in Redis; in embedded mode a file in `BALANCE_HOME`; elsewhere per process), so a slow
consumer does not make the relay warn every 30 s.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from celery.exceptions import SoftTimeLimitExceeded
from kombu.transport import virtual

from config import Settings

log = logging.getLogger(__name__)

EPISODE_KEY = "balance-worker:events-backlog"
EPISODE_FILE = "events-backlog"
WARN_EVERY_SECONDS = 60.0

Measure = Callable[[], int | None]


def queue_length(app: Any, queue: str) -> int | None:
    """Messages waiting in `queue` on the app's broker; None when the broker cannot say
    (not one of kombu's virtual transports, e.g. AMQP). Raises when the broker cannot be
    reached.

    `queue_declare` on a virtual channel answers from the transport's own count (Redis: the
    lists of every priority; SQLite broker: rows not yet delivered)."""
    with app.pool.acquire(block=True, timeout=5) as conn:
        channel = conn.default_channel
        if not isinstance(channel, virtual.Channel):
            return None
        return int(channel.queue_declare(queue=queue).message_count)


class Episode(Protocol):
    def start(self) -> bool:
        """Mark a backlog episode; True only for the caller that started it."""
        ...

    def end(self) -> bool:
        """Clear the mark; True only for the caller that ended an episode."""
        ...


def episode_key(queue: str) -> str:
    """The Redis key that marks a backlog episode of the events queue `queue`: one per queue,
    so a relay feeding another queue on the same Redis never ends this queue's episode."""
    return f"{EPISODE_KEY}:{queue}"


_redis_clients: dict[str, Any] = {}


def redis_client(url: str) -> Any:
    """One plain redis-py client per broker URL and process (its own connection pool).

    Not kombu's `channel.client`: that client shares the channel's asynchronous pool, where
    a connection can be left with an unread reply (an interrupted BRPOP, say); every later
    command then reads the reply of the one before it (seen: SET NX answering None, DEL
    answering None), and the episode's mark was never cleared."""
    client = _redis_clients.get(url)
    if client is None:
        import redis

        client = _redis_clients[url] = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5
        )
    return client


class RedisEpisode:
    """The mark is a key in the broker's Redis: one warning per episode for the fleet."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key

    def start(self) -> bool:
        return bool(redis_client(self.url).set(self.key, "1", nx=True))

    def end(self) -> bool:
        return bool(redis_client(self.url).delete(self.key))


class FileEpisode:
    """The mark is a file (embedded mode: every process of the instance shares the folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        return True

    def end(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


@dataclass
class LocalEpisode:
    """Per process: other brokers (tests' memory://)."""

    active: bool = False

    def start(self) -> bool:
        started, self.active = not self.active, True
        return started

    def end(self) -> bool:
        ended, self.active = self.active, False
        return ended


_local = LocalEpisode()


def episode_for(app: Any, settings: Settings) -> Episode:
    """Where the mark of a backlog episode lives for this broker."""
    url = settings.effective_broker_url
    if url.startswith(("redis://", "rediss://")):
        return RedisEpisode(url, episode_key(settings.events_queue))
    if url.startswith("sqla+"):
        return FileEpisode(settings.balance_home.resolve() / EPISODE_FILE)
    return _local


_last_warned: dict[str, float] = {}


def _warn_now(what: str, every: float | None) -> bool:
    """True at most once per `every` seconds per process (None: once per process)."""
    moment = time.monotonic()
    last = _last_warned.get(what)
    if last is not None and (every is None or moment - last < every):
        return False
    _last_warned[what] = moment
    return True


@dataclass
class EventsQueueBound:
    """One relay run's view of the events queue: `room()` is the relay's question before
    each batch; `paused` and `length` what its result reports."""

    queue: str
    maximum: int
    measure: Measure
    broker: str = ""
    paused: bool = False
    length: int | None = None
    error: str | None = field(default=None)

    def room(self) -> int | None:
        """How many more messages the relay may publish now: 0 to stop, None for no bound."""
        try:
            length = self.measure()
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # fail closed: the events wait in the outbox
            self.paused, self.length = True, None
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            if _warn_now("measure", WARN_EVERY_SECONDS):
                log.warning(
                    "events relay: cannot measure the events queue %r (%s); publishing nothing "
                    "until it can (the events stay in the outbox)",
                    self.queue,
                    self.error,
                )
            return 0
        if length is None:
            self.paused, self.length = False, None
            if _warn_now("unbounded", None):
                log.warning(
                    "events relay: EVENTS_QUEUE_MAX is not enforced: the broker (%s) does not "
                    "report the events queue's length; bound %r in the broker itself "
                    "(RabbitMQ: a max-length policy)",
                    self.broker or "?",
                    self.queue,
                )
            return None
        self.length = length
        free = self.maximum - length
        self.paused = free <= 0
        return max(free, 0)

    def result(self, published: int) -> dict[str, Any]:
        """The relay's result: `published`, `paused`, `queue_length` (when last measured,
        before the last batch; None when it cannot be measured), `queue_max`."""
        return {
            "published": published,
            "paused": self.paused,
            "queue_length": self.length,
            "queue_max": self.maximum,
        }


def close_run(bound: EventsQueueBound, held_back: bool, episode: Episode) -> None:
    """After a run: start or end the backlog episode, logging once for each.

    `held_back`: the run stopped at the bound with events left in the outbox. A failure to
    mark the episode never fails the relay (it only costs a repeated or a missing line)."""
    try:
        if held_back:
            if episode.start():
                log.warning(
                    "events relay paused: the events queue %r holds %s messages "
                    "(EVENTS_QUEUE_MAX %d); events stay in the outbox and go out when its "
                    "consumers catch up",
                    bound.queue,
                    "an unknown number of" if bound.length is None else bound.length,
                    bound.maximum,
                )
        elif episode.end():
            log.info(
                "events relay resumed: the outbox's held-back events are published "
                "(events queue %r: %s messages before the last batch)",
                bound.queue,
                bound.length,
            )
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        log.debug("events relay: cannot mark the backlog episode (%s)", exc)
