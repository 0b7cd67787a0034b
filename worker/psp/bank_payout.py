"""Bank payouts (SEPA credit transfers out) for refunds of bank-transfer payments, as a
stub in the adapters' style: frozen dataclasses in and out, once per idempotency key, and a
look-up by key for an answer lost on the way. Knows nothing of our database.

Sandbox behaviour (like the PSP stubs' amount table): an amount in 2000.00-2999.99 is
returned by the receiving bank (`AC04` "Closed account number", an ISO 20022 return
reason); a PSP_STUB_TIMEOUT_AMOUNTS amount is paid and then the answer is lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from config import Settings
from worker.kernel.money import exponent
from worker.psp.base import ChargeRequest, Outcome, RefundResult
from worker.psp.errors import TransportError
from worker.psp.sandbox import RemoteSide


@dataclass(frozen=True)
class PayoutRequest:
    idempotency_key: str
    iban: str  # electronic format, validated by the caller
    holder: str
    amount_minor: int
    currency: str
    reference: str  # printed on the customer's statement (the refund id)


class BankPayoutSandbox:
    name = "bank_payout"

    def __init__(self, settings: Settings) -> None:
        self.remote = RemoteSide(settings, self.name)

    def payout(self, request: PayoutRequest) -> RefundResult:
        """Pay once per key (a repeat answers the first record). Never raises: a lost
        answer is `unknown`, an unreachable bank `not_attempted`."""
        amount = Decimal(request.amount_minor).scaleb(-exponent(request.currency))
        returned = Decimal("2000.00") <= amount <= Decimal("2999.99")
        as_charge = ChargeRequest(
            request.idempotency_key,
            request.iban,  # the stub's token column holds the destination
            request.amount_minor,
            request.currency,
            request.reference,
        )
        try:
            stored = self.remote.record(
                as_charge,
                Outcome.DECLINED if returned else Outcome.SUCCEEDED,
                f"po_{uuid.uuid4().hex[:16]}",
                "AC04" if returned else None,
                "Closed account number" if returned else None,
            )
            if stored.outcome is Outcome.SUCCEEDED and self.remote.times_out(as_charge):
                raise TransportError("read timed out after the bank accepted the payout", sent=True)
        except TransportError as exc:
            if exc.sent:
                return RefundResult(Outcome.UNKNOWN, None, "timeout", str(exc))
            return RefundResult(Outcome.NOT_ATTEMPTED, None, "unreachable", str(exc))
        return RefundResult(stored.outcome, stored.psp_reference, stored.code, stored.text)

    def lookup(self, idempotency_key: str) -> RefundResult | None:
        """The payout recorded under this key; None if the bank never received it."""
        found = self.remote.lookup(idempotency_key)
        if found is None:
            return None
        return RefundResult(found.outcome, found.psp_reference, found.code, found.text)
