"""Thin tasks of the invoices area: the beat job that issues pending card invoices."""

from __future__ import annotations

from typing import Any

from worker.celery import app
from worker.invoices import service as invoices
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.task_base import DbTask


@app.task(name=task_names.INVOICES_ISSUE_DUE, base=DbTask, bind=True)
def issue_due(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Issue pending card invoices that are settled or CARD_INVOICE_MAX_DELAY old by `as_of`
    (ISO-8601 with offset; default now). Returns `{issued, as_of}`. Safe to run twice."""
    return invoices.issue_due(self.uow, parse_as_of(as_of))
