"""`balancectl numbers ...` and `jobs run fees` as operators run them: a real process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli.test_cli import run
from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

NUMBER_FIELDS = {"id", "account_id", "msisdn", "country", "status", "monthly_fee", "next_renewal"}


def _ok(*args: str) -> Any:
    done = run(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_rent_list_cancel_and_the_fees_job() -> None:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="CLI numbers", now=now())["id"]
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="10", reason="seed", now=now())

    rented = _ok(
        "numbers", "rent", account_id, "--msisdn", "07400 123456", "--country", "gb",
        "--monthly-fee", "2.50",
    )  # fmt: skip
    assert set(rented) >= NUMBER_FIELDS
    assert (rented["msisdn"], rented["country"], rented["status"]) == (
        "+447400123456",
        "GB",
        "active",
    )
    assert rented["monthly_fee"] == "2.50" and rented["balance"] == "7.50"
    assert len(rented["next_renewal"]) == 10  # YYYY-MM-DD

    listed = _ok("numbers", account_id)
    assert [n["id"] for n in listed] == [rented["id"]]

    refused = run(
        "numbers", "rent", account_id, "--msisdn", "+14155550123", "--country", "GB",
        "--monthly-fee", "1", "--json",
    )  # fmt: skip
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["field"] == "msisdn"
    poor = run(
        "numbers", "rent", account_id, "--msisdn", "+447400123457", "--country", "GB",
        "--monthly-fee", "100", "--json",
    )  # fmt: skip
    assert poor.returncode == 1
    assert json.loads(poor.stdout)["error"]["code"] == "insufficient_funds"

    job = _ok("jobs", "run", "fees", "--as-of", "2099-01-01T00:00:00+00:00")
    assert {"due", "paid", "failed", "cancelled"} <= set(job)
    assert job["paid"] >= 1  # the months up to 2099 that 7.50 can pay, then one failure

    cancelled = _ok("numbers", "cancel", rented["id"])
    assert cancelled["status"] == "cancelled"
    missing = run("numbers", "cancel", "num_missing", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"
