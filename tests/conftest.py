"""Test session: real PostgreSQL and Redis (see tests/services.py), schema migrated once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services as test_services
from tests.fleet_support import Fleet

_services: test_services.Services | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Resolve services before anything imports the Celery app (it reads settings on import)."""
    global _services
    if getattr(config, "workerinput", None) is not None or _services is not None:
        return
    _services = test_services.start()
    os.environ["DATABASE_URL"] = _services.database_url
    os.environ["BROKER_URL"] = _services.broker_url
    os.environ["RESULT_BACKEND"] = _services.broker_url
    os.environ.pop("SMTP_HOST", None)
    os.environ["BALANCE_HOME"] = str(Path(config.rootpath) / ".balance-test")
    from config import reset_settings
    from worker.db.migrate import upgrade

    reset_settings()
    upgrade()
    from worker import wiring

    wiring.install()  # the charge engine's outcome hooks, as the app and the CLI install them


def pytest_unconfigure(config: pytest.Config) -> None:
    global _services
    if _services is not None:
        from worker.db.session import dispose_engine

        dispose_engine()
        _services.stop()
        _services = None


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _services is None:
        return []
    return [
        f"balance-worker test services: db={_services.database_url} redis={_services.broker_url}"
    ]


@pytest.fixture
def clean_db() -> Iterator[None]:
    """Empty every table before the test (one TRUNCATE on PostgreSQL)."""
    from sqlalchemy import inspect, text

    from worker.db.session import get_engine

    engine = get_engine()
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    from worker.ledger import service as ledger

    ledger.clear_caches()  # ids restart: cached system ledger-account ids are stale
    yield


@pytest.fixture(autouse=True)
def _clean_for_integration(request: pytest.FixtureRequest) -> None:
    """Every test marked `integration` starts from empty tables."""
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("clean_db")


@pytest.fixture
def fleet(tmp_path: Path, clean_db: None, broker_url: str) -> Iterator[Fleet]:
    """Start workers with fleet.start_worker(); all are stopped (and the queue purged) after."""
    import redis

    redis.Redis.from_url(broker_url).flushdb()
    fleet = Fleet(tmp=tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()
        redis.Redis.from_url(broker_url).flushdb()


@pytest.fixture
def database_url() -> str:
    assert _services is not None
    return _services.database_url


@pytest.fixture
def broker_url() -> str:
    assert _services is not None
    return _services.broker_url
