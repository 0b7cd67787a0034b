"""The relay's bound on the events queue, without a broker: what a broker that cannot be
measured (AMQP) gets, and how a backlog episode is marked."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from worker import events_bound


class _App:
    """Stands in for the Celery app: its pool hands out a connection with `channel`."""

    def __init__(self, channel: object) -> None:
        self.channel = channel
        self.pool = self

    @contextmanager
    def acquire(self, block: bool, timeout: float) -> Any:
        class _Conn:
            default_channel = self.channel

        yield _Conn()


def test_a_broker_that_is_not_a_virtual_transport_cannot_be_measured() -> None:
    assert events_bound.queue_length(_App(object()), "events") is None


def test_an_unmeasurable_queue_is_not_bounded_and_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_bound, "_last_warned", {})
    caplog.set_level(logging.WARNING, logger=events_bound.__name__)
    for _ in range(3):
        bound = events_bound.EventsQueueBound("events", 10, lambda: None, broker="amqp")
        assert bound.room() is None
        assert bound.result(4) == {
            "published": 4,
            "paused": False,
            "queue_length": None,
            "queue_max": 10,
        }
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "EVENTS_QUEUE_MAX is not enforced" in warnings[0]
    assert "amqp" in warnings[0]


def test_a_failed_measurement_stops_the_relay_and_warns_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_bound, "_last_warned", {})
    caplog.set_level(logging.WARNING, logger=events_bound.__name__)

    def broken() -> int | None:
        raise TimeoutError("no answer")

    for _ in range(3):
        bound = events_bound.EventsQueueBound("events", 10, broken)
        assert bound.room() == 0
        assert bound.paused is True
        assert bound.length is None
    assert len(caplog.records) == 1
    assert "TimeoutError: no answer" in caplog.records[0].getMessage()


def test_room_is_what_is_left_below_the_max() -> None:
    lengths = iter([0, 7, 10, 12])
    bound = events_bound.EventsQueueBound("events", 10, lambda: next(lengths))
    assert [bound.room() for _ in range(4)] == [10, 3, 0, 0]
    assert bound.paused is True
    assert bound.length == 12


def test_file_episode_marks_one_start_and_one_end(tmp_path: Path) -> None:
    a = events_bound.FileEpisode(tmp_path / "home" / events_bound.EPISODE_FILE)
    b = events_bound.FileEpisode(tmp_path / "home" / events_bound.EPISODE_FILE)
    assert (a.start(), b.start(), a.start()) == (True, False, False)
    assert (b.end(), a.end()) == (True, False)
    assert a.start() is True


def test_episode_lives_with_the_broker(tmp_path: Path) -> None:
    redis = Settings(BROKER_URL="redis://127.0.0.1:6379/0", BALANCE_HOME=tmp_path)
    embedded = Settings(BROKER_URL=None, BALANCE_HOME=tmp_path)
    memory = Settings(BROKER_URL="memory://", BALANCE_HOME=tmp_path)
    assert isinstance(events_bound.episode_for(object(), redis), events_bound.RedisEpisode)
    episode = events_bound.episode_for(object(), embedded)
    assert isinstance(episode, events_bound.FileEpisode)
    assert episode.path == tmp_path.resolve() / events_bound.EPISODE_FILE
    assert isinstance(events_bound.episode_for(object(), memory), events_bound.LocalEpisode)
