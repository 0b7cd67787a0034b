"""Errors of the domain layer: a refusal is data (code, field, message), not a crash.

Arguments are plain strings so Celery can carry them through a JSON result backend
and rebuild the same exception on the caller's side.
"""

from __future__ import annotations

from worker.kernel.redaction import redact


class DomainError(Exception):
    """A refused operation. `code` is stable for machines, `message` is for people."""

    code = "error"

    def __init__(self, field: str, message: str, code: str | None = None) -> None:
        # Messages echo input values and are logged by Celery: never let a card number through.
        message = redact(message) or ""
        super().__init__(field, message, code or self.code)
        self.field = field
        self.message = message
        self.code = code or type(self).code

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": str(self)}


class ValidationError(DomainError):
    code = "invalid"


class NotFound(DomainError):
    code = "not_found"


class InsufficientFunds(DomainError):
    code = "insufficient_funds"


class ReferenceConflict(DomainError):
    code = "reference_conflict"


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"


class AuditFailed(DomainError):
    code = "audit_failed"


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"


class PaymentMethodRefused(DomainError):
    code = "payment_method_refused"


class PaymentMethodInUse(DomainError):
    code = "payment_method_in_use"


class InvoiceState(DomainError):
    """The invoice is not in a state that allows this (pay or void a paid one, download a
    pending one)."""

    code = "invoice_state"


class TransferState(DomainError):
    """The bank transfer is not in a state that allows this (assign a matched one)."""

    code = "transfer_state"


class NoDatabase(DomainError):
    """The command would have to create a database to answer: it refuses instead (the
    message says where it looked and what to do)."""

    code = "no_database"


class InstanceRunning(DomainError):
    """Another `balancectl run` holds this BALANCE_HOME."""

    code = "instance_running"


class NeverRuns(ValidationError):
    """A well-formed setting that could never take effect: every execution would be skipped
    or refused (an auto-reload amount above the monthly cap, a threshold no reload can
    clear, an alert that could only fire after the account is suspended)."""

    code = "never_runs"


class AccountSuspended(DomainError):
    code = "account_suspended"


class NumberUnavailable(DomainError):
    """The MSISDN is held by an account (a number belongs to one account at a time)."""

    code = "number_unavailable"


class NotRefundable(DomainError):
    """The charge did not succeed (or is not a charge money can go back to)."""

    code = "not_refundable"


class NothingToRefund(DomainError):
    """Everything the charge took has been refunded already (or is being refunded)."""

    code = "nothing_to_refund"


class RefundState(DomainError):
    """The refund is not in a state that allows this (details for a card refund)."""

    code = "refund_state"
