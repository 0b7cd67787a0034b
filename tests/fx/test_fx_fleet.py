"""The daily fetch with real worker processes: runs racing each other (a doubled beat tick,
a redelivery) store each rate once, and every run reports the same file."""

from __future__ import annotations

import pytest
from celery import group
from sqlalchemy import func, select

from tests.fleet_support import Fleet
from worker.celery import app
from worker.db.session import unit_of_work
from worker.fx.models import FxRate
from worker.kernel import task_names

pytestmark = pytest.mark.fleet


def test_concurrent_fetches_store_each_rate_once(fleet: Fleet, ecb_server: str) -> None:
    pending = group(
        [app.signature(task_names.FX_FETCH, kwargs={"as_of": None}) for _ in range(4)]
    ).apply_async()
    env = {"FX_RATES_URL": f"{ecb_server}/eurofxref-hist.xml"}
    fleet.start_worker(concurrency=2, extra_env=env)
    fleet.start_worker(concurrency=2, extra_env=env)
    fleet.wait_ready()
    runs = pending.get(timeout=60)
    assert [(r["dates"], r["rates"], r["last"]) for r in runs] == [(3, 6, "2026-11-27")] * 4
    with unit_of_work() as uow:
        stored = uow.session.execute(
            select(FxRate.currency, func.count()).group_by(FxRate.currency)
        ).all()
    assert sorted(stored) == [("GBP", 3), ("USD", 3)]
