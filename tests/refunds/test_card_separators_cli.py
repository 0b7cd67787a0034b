"""Card numbers written with dots, slashes, underscores, spaced dashes, full-width digits or
a line break are redacted in free text and refused as a holder, through the CLI (issue
fixred, point 1)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.invoices import support as s
from tests.refunds import support as r
from worker.cli import app
from worker.db.session import unit_of_work
from worker.kernel.redaction import REDACTED
from worker.ledger.models import Account
from worker.refunds.models import Refund

pytestmark = pytest.mark.integration
runner = CliRunner()

CARDS = [
    "4111.1111.1111.1111",
    "4111/1111/1111/1111",
    "4111_1111_1111_1111",
    "4111 - 1111 - 1111 - 1111",
    "4111 1111 1111 1111".translate({c: c + 0xFEE0 for c in range(48, 58)}),  # full-width
    "4111 1111\n1111 1111",
]


def run(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    assert "1111" not in result.output and "\uff11" not in result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_company_and_refund_reason_store_and_print_redacted() -> None:
    account_id = s.account()
    for card in CARDS:
        shown = run("accounts", "update", account_id, "--company", f"Acme {card}")
        assert shown["company"] == f"Acme {REDACTED}"
        with unit_of_work() as uow:
            stored = uow.session.scalars(select(Account).where(Account.id == account_id)).one()
            assert stored.company == f"Acme {REDACTED}"
    _, charge_id = r.card_account("60.00")
    for n, card in enumerate(CARDS):
        run("refund", charge_id, "1.00", "--reason", f"asked {card}", "--idempotency-key", f"k{n}")
    with unit_of_work() as uow:
        reasons = uow.session.scalars(select(Refund.reason).where(Refund.charge_id == charge_id))
        assert sorted(set(reasons)) == [f"asked {REDACTED}"]


def test_a_holder_holding_a_card_number_is_refused_without_echo() -> None:
    bank_account = s.account()
    invoice = s.proforma(bank_account, "40.00", s.method(bank_account))
    s.receive("40.00", invoice["number"])
    [bank_charge] = {i.charge_id for i in s.invoices_of(bank_account)}
    assert bank_charge is not None
    waiting = run("refund", bank_charge)
    for card in CARDS:
        bad = run(
            "refunds", "details", waiting["refund_id"], "--iban", "DE89 3704 0044 0532 0130 00",
            "--holder", f"Jane {card}", code=1,
        )  # fmt: skip
        assert bad["error"]["field"] == "holder"
        assert not re.search(r"\d{4}", bad["error"]["message"])
