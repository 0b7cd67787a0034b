"""The adapter protocol. Inputs and outputs are frozen dataclasses (after saleor's
payment interface): the charge engine never sees a PSP SDK object.

A charge outcome is five-way. Only `declined` is a hard decline; `not_attempted` is safe
to retry; `unknown` must be resolved by `lookup`, never by charging again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    DECLINED = "declined"
    NOT_ATTEMPTED = "not_attempted"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class VaultRequest:
    nonce: str
    customer_ref: str


@dataclass(frozen=True)
class VaultedMethod:
    type: str  # card | paypal | bank_transfer
    token: str
    fingerprint: str | None  # the same card/PayPal account -> the same fingerprint
    display: str
    brand: str | None = None
    last4: str | None = None
    expiry: str | None = None
    payer_email: str | None = None


@dataclass(frozen=True)
class ChargeRequest:
    idempotency_key: str
    token: str
    amount_minor: int
    currency: str
    description: str


@dataclass(frozen=True)
class ChargeResult:
    outcome: Outcome
    psp_reference: str | None = None
    code: str | None = None
    text: str | None = None
    # When the PSP processed the charge, if it says (a look-up does): settlement counts its
    # days from then, not from when we learnt of it.
    processed_at: datetime | None = None


@dataclass(frozen=True)
class RefundRequest:
    idempotency_key: str
    charge_reference: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class RefundResult:
    outcome: Outcome
    psp_reference: str | None = None
    code: str | None = None
    text: str | None = None


class PspAdapter(Protocol):
    """What the charge engine needs from a PSP."""

    name: str
    #: False for methods that cannot be charged on demand (bank transfer).
    on_demand: bool

    def vault(self, request: VaultRequest) -> VaultedMethod:
        """Turn a nonce/token into a stored method. Raises VaultRefused."""
        ...

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once per idempotency key. Never raises for a decline or a timeout."""
        ...

    def lookup(self, idempotency_key: str) -> ChargeResult | None:
        """The PSP's record of a charge by our key; None if it never received it.

        Raises TransportError when the PSP cannot be asked right now."""
        ...

    def refund(self, request: RefundRequest) -> RefundResult: ...
