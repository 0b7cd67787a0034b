"""Charge states and the moves between them: the one place they are named.

The CHECK constraint and the partial indexes of `charges` are built from these sets, so
the database and the engine agree on what a state means.
"""

from __future__ import annotations

from enum import StrEnum


class ChargeStatus(StrEnum):
    PROCESSING = "processing"
    PENDING = "pending"
    UNKNOWN = "unknown"
    NOT_ATTEMPTED = "not_attempted"
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"
    # The cardholder must authenticate (3-D Secure: Braintree 2099; PayPal payer action):
    # nothing was taken, and the same method will not be charged without the customer.
    REQUIRES_ACTION = "requires_action"


class Purpose(StrEnum):
    """Why a charge was made."""

    TOP_UP = "top_up"
    AUTO_RELOAD = "auto_reload"


class SettlementStatus(StrEnum):
    """The platform's money at the PSP after a success: pending until `available_on`."""

    PENDING = "pending"
    AVAILABLE = "available"


S = ChargeStatus
# requires_action is terminal: the charge is over (nothing taken); the customer's answer is a
# new payment method (a fresh, authenticated nonce), charged by a new charge.
TERMINAL: frozenset[str] = frozenset({S.SUCCEEDED, S.DECLINED, S.FAILED, S.REQUIRES_ACTION})
ALLOWED: dict[str, frozenset[str]] = {
    S.PROCESSING: frozenset(
        {
            S.SUCCEEDED,
            S.PENDING,
            S.DECLINED,
            S.NOT_ATTEMPTED,
            S.UNKNOWN,
            S.FAILED,
            S.REQUIRES_ACTION,
        }
    ),
    S.UNKNOWN: frozenset({S.SUCCEEDED, S.PENDING, S.DECLINED, S.FAILED, S.REQUIRES_ACTION}),
    S.PENDING: frozenset({S.SUCCEEDED, S.DECLINED, S.FAILED, S.REQUIRES_ACTION}),
    S.NOT_ATTEMPTED: frozenset({S.PROCESSING, S.FAILED}),
}
# Open: not terminal (an auto-reload in flight; one per account, by a partial unique index).
IN_FLIGHT = (S.PROCESSING, S.UNKNOWN, S.PENDING, S.NOT_ATTEMPTED)
# What the janitor resolves by looking the charge up at the PSP.
SYNCED = (S.PROCESSING, S.UNKNOWN, S.PENDING)
# What the auto-reload caps count: every reload that may have taken money.
COUNTED = (*IN_FLIGHT, S.SUCCEEDED)
