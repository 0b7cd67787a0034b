"""Test session: real PostgreSQL and Redis (see tests/services.py), schema migrated once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services as test_services

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
    from worker.services import ledger

    ledger.clear_caches()  # ids restart: cached system ledger-account ids are stale
    yield


@pytest.fixture
def database_url() -> str:
    assert _services is not None
    return _services.database_url


@pytest.fixture
def broker_url() -> str:
    assert _services is not None
    return _services.broker_url
