"""The display currency's one task: the daily fetch of the reference rates."""

from __future__ import annotations

from typing import Any

from worker.celery import app
from worker.fx import fetch as fx_fetch
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.task_base import DbTask


@app.task(name=task_names.FX_FETCH, base=DbTask, bind=True)
def fetch(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Daily (beat): fetch the ECB's reference rates from FX_RATES_URL and store them.

    `as_of`: ISO-8601 with offset, the import time recorded (default now). Returns
    `{url, dates, rates, first, last}`, or `{skipped: true}` without FX_RATES_URL.
    Raises FetchFailed (field FX_RATES_URL) or ValidationError naming the file's bad part."""
    return fx_fetch.fetch(self.uow, parse_as_of(as_of))
