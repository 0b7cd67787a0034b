import pytest

from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import service as ledger

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def test_account_starts_empty_and_audit_passes() -> None:
    with unit_of_work() as uow:
        created = accounts.create(uow, name="Acme", now=now())
    assert created["balance"] == "0.00"
    with unit_of_work() as uow:
        assert ledger.audit(uow.session)["ok"] is True
