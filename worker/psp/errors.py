"""Errors of the PSP layer. A decline is data (ChargeResult); these are the rest.

`VaultRefused` is a definitive answer about a nonce. `TransportError` means we could not
talk to the PSP: `sent=False` (connection refused: nothing happened, safe to retry) or
`sent=True` (timed out after sending: the outcome is unknown until a lookup).
"""

from __future__ import annotations


class PspError(Exception):
    """Base of the PSP layer."""


class VaultRefused(PspError):
    """The PSP refused to vault a payment method (verification failed, nonce used...)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text

    def __str__(self) -> str:
        return f"{self.text} ({self.code})"


class VaultUnavailable(VaultRefused):
    """The PSP could not be asked to vault (unreachable, timed out, refused our credentials).

    A VaultRefused, so a caller that handles refusals refuses the request with nothing written;
    the nonce may have been used up at the PSP, so the customer retries with a fresh one."""


class TransportError(PspError):
    """No answer from the PSP. `sent` says whether the request may have reached it."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class UnsupportedOperation(PspError):
    """The method cannot do this (e.g. charge a bank transfer on demand)."""


class RefundLookUpUnsupported(PspError, LookupError):
    """This PSP cannot look this refund up (no refund look-up at all, or PayPal without the
    capture it keeps refunds under): an operator must check. Nothing went wrong in asking,
    unlike any other LookupError (a KeyError or IndexError from reading an answer)."""
