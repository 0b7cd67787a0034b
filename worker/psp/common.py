"""What the real adapters share: amounts for an API, clipped texts, fingerprints, settings.

Nothing here knows our database: an adapter turns our frozen requests into a PSP's API calls
and the PSP's answers back into frozen results.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from pydantic import SecretStr

from config import Settings, SettingsError
from worker.kernel.money import exponent, format_amount
from worker.kernel.redaction import redact

# Column widths of what the engine stores from a result (charges.decline_code / decline_text /
# psp_reference): longer PSP texts are cut, never refused.
CODE_MAX = 64
TEXT_MAX = 300
REFERENCE_MAX = 120


def amount_string(amount_minor: int, currency: str) -> str:
    """Whole minor units as the decimal string PSP APIs take: (1050, "EUR") -> "10.50",
    (1050, "JPY") -> "1050". The exponent is ISO 4217's (worker.money.exponent).

    Raises ValueError for an amount that is not a positive integer."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ValueError("amount_minor must be a positive integer")
    return format_amount(Decimal(amount_minor).scaleb(-exponent(currency)), currency)


def clip(text: object, limit: int = TEXT_MAX) -> str | None:
    """A PSP's text as we may store and log it: card numbers redacted, cut to `limit`."""
    if text is None:
        return None
    cleaned = redact(" ".join(str(text).split())) or ""
    return cleaned[:limit] if cleaned else None


def paypal_fingerprint(payer_id: str | None, email: str | None) -> str | None:
    """One PayPal account -> one fingerprint, whichever PSP vaulted it (Braintree or PayPal's
    own vault): the payer id when the PSP gives it, else the lower-cased email."""
    basis = (payer_id or "").strip() or (email or "").strip().lower()
    if not basis:
        return None
    return "paypal:" + hashlib.sha256(f"paypal-payer:{basis}".encode()).hexdigest()[:40]


def safe_reference(value: str, limit: int) -> str:
    """Our idempotency key (at most 200 characters) as a PSP field of at most `limit`: the key
    itself when it fits, else its first characters and a hash of the whole (still one per key)."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:40]
    return f"{value[: limit - len(digest) - 1]}~{digest}"


def require_settings(settings: Settings, psp: str, names: tuple[tuple[str, str], ...]) -> None:
    """Start-up check: every `(ENV_NAME, attribute)` the PSP needs is set. Raises SettingsError
    naming the first missing one (never its value)."""
    for env_name, attribute in names:
        value = getattr(settings, attribute)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or not str(value).strip():
            raise SettingsError(f"{env_name}: required when PSP_ENABLED names {psp}")
