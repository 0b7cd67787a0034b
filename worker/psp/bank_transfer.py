"""Bank transfer: cannot be charged on demand. A top-up issues a pro-forma invoice and
waits (status `pending`) for the money to arrive; reconciliation completes it."""

from __future__ import annotations

import hashlib

from config import Settings
from worker.psp.base import (
    ChargeRequest,
    ChargeResult,
    Outcome,
    RefundRequest,
    RefundResult,
    VaultedMethod,
    VaultRequest,
)


class BankTransfer:
    name = "bank_transfer"
    on_demand = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def vault(self, request: VaultRequest) -> VaultedMethod:
        return VaultedMethod(
            type="bank_transfer",
            token=f"bank:{request.customer_ref}",
            fingerprint=None,
            display="Bank transfer (pro-forma invoice)",
        )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        invoice = "PF-" + hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:10].upper()
        return ChargeResult(Outcome.PENDING, invoice, None, "awaiting bank transfer")

    def lookup(self, idempotency_key: str) -> ChargeResult | None:
        return None  # the bank tells us through reconciliation, not by lookup

    def refund(self, request: RefundRequest) -> RefundResult:
        return RefundResult(Outcome.DECLINED, None, "manual", "refund bank transfers manually")
