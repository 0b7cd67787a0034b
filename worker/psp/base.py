"""The adapter protocol. Inputs and outputs are frozen dataclasses (after saleor's
payment interface): the charge engine never sees a PSP SDK object.

A charge outcome is six-way. Only `declined` is a hard decline; `not_attempted` is safe
to retry; `unknown` must be resolved by `lookup`, never by charging again; `requires_action`
means the cardholder must authenticate (3-D Secure / SCA, PayPal payer action): nothing was
taken, and charging the same method again without the customer will not succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    DECLINED = "declined"
    NOT_ATTEMPTED = "not_attempted"
    UNKNOWN = "unknown"
    # Braintree processor response 2099 "Cardholder Authentication Required", PayPal
    # PAYER_ACTION_REQUIRED: the customer must act (authenticate, approve) before a charge.
    REQUIRES_ACTION = "requires_action"


@dataclass(frozen=True)
class VaultRequest:
    nonce: str
    customer_ref: str


@dataclass(frozen=True)
class VaultedMethod:
    type: str  # card | paypal | bank_transfer | wechat_pay
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
    # True for a charge the customer did not start (auto-reload): a PSP that knows stored
    # credentials flags it as merchant-initiated (Braintree `transaction_source`
    # "unscheduled"), which SCA exempts where the first use was authenticated.
    merchant_initiated: bool = False


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


class Settlement(StrEnum):
    """Where a succeeded charge's money is at the PSP (Braintree's settlement statuses)."""

    SETTLED = "settled"  # the money reached the merchant account (settled, settlement_confirmed)
    SETTLING = "settling"  # on its way (submitted_for_settlement, settling, settlement_pending)
    FAILED = "failed"  # it will not arrive (settlement_declined, voided, ...)


@dataclass(frozen=True)
class SettlementStatus:
    state: Settlement
    psp_status: str  # the PSP's own word, for operators ("submitted_for_settlement")
    settled_at: datetime | None = None  # when the PSP says it settled (UTC), if it does


class PspAdapter(Protocol):
    """What the charge engine needs from a PSP."""

    name: str
    #: False for methods that cannot be charged on demand (bank transfer, WeChat Pay): never
    #: a default, never auto-reload; a charge is `pending` until the payer pays.
    on_demand: bool
    # Optional attributes (read with getattr, default in brackets):
    # - `polls_pending` [False]: a pending payment of a method not charged on demand is
    #   completed at the PSP and found by `lookup` (WeChat Pay), so the janitor asks; a bank
    #   transfer is completed by reconciliation instead.
    # - `allowed_countries` [None: every country]: the account countries (ISO 3166-1) the
    #   method may be added for; payment_methods refuses others naming `country`.

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

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of the charge `request.charge_reference`, once per refund key
        (a repeated key answers the first result). Never raises for a decline; an answer
        lost after the PSP acted is `unknown` (resolve it with `LooksUpRefunds`)."""
        ...


@runtime_checkable
class ReportsSettlement(Protocol):
    """An adapter that can say whether a charge's money has settled (the card-invoice rule:
    a card payment's final invoice waits until it settled, seeds 000/001 "up to 72 hours").
    Optional: check with `isinstance(adapter, ReportsSettlement)`."""

    def settlement_status(self, psp_reference: str) -> SettlementStatus:
        """The settlement of the charge `psp_reference` (as `ChargeResult.psp_reference`).

        Raises TransportError when the PSP cannot be asked right now."""
        ...


@runtime_checkable
class LooksUpRefunds(Protocol):
    """An adapter that can say what became of a refund by our refund key (the refunds
    janitor resolves an `unknown` answer this way, never by refunding again). Optional:
    check with `isinstance(adapter, LooksUpRefunds)`."""

    def lookup_refund(
        self, idempotency_key: str, charge_reference: str | None = None
    ) -> RefundResult | None:
        """The PSP's record of the refund with this key; None if it never received it.
        `charge_reference` is the refunded charge's `psp_reference` (as in RefundRequest):
        a PSP that keeps refunds under their payment (PayPal) is asked through it.

        Raises TransportError when the PSP cannot be asked right now,
        RefundLookUpUnsupported when it cannot be asked without the charge reference."""
        ...
