"""Braintree through its official SDK (PyPI `braintree`): cards and PayPal accounts vaulted on
a Braintree customer (our account id), sales submitted for settlement, look-ups by our key.

Idempotency. Braintree's (XML) API has no idempotency key for a sale (its "At-Most-Once
Processing" is documented for the GraphQL API only), so our key travels as the sale's
`order_id`, and this adapter *searches for the key before it sends a sale*: a key that already
has a sale that reached the processor (succeeded, pending, declined, needing authentication)
gets that sale's answer back, never a second sale. A key whose sales all failed before the
processor (status `failed`, response 3000) or that has none is sent. The engine never sends
one key from two workers at once (its charge row is committed first and re-armed only under
the row lock), so the search cannot race a sale of our own. It costs one search per charge
(two requests when the key is found).

Outcomes (Braintree's processor responses, reference/general/processor-responses):
- submitted_for_settlement / settling / settlement_pending / settled -> succeeded
- authorizing / authorized -> pending (we always submit for settlement: an operator looks)
- processor_declined 2000-2999 -> declined, `code` the response code, `text` its text and
  whether Braintree calls it a soft or a hard decline; 2099 "Cardholder Authentication
  Required" -> requires_action
- gateway_rejected -> declined (`gateway_rejected`, the reason in `text`); a validation error
  (no transaction: bad token, ...) -> declined with Braintree's error code
- failed (3000 "Processor Network Unavailable - Try Again") -> not_attempted
- no connection -> not_attempted; sent but no answer (timeout, 5xx) -> unknown
Longer than 400 lines on purpose: one PSP is one module (vault, charge with its look-up
first, refund, settlement status and the response mapping all read the same SDK objects).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

import braintree
import certifi
import requests
import urllib3
from braintree.exceptions import (
    AuthenticationError,
    AuthorizationError,
    GatewayTimeoutError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnexpectedError,
    UpgradeRequiredError,
)

from config import Settings, SettingsError
from worker.kernel.validation import refuse_pan
from worker.psp.base import (
    ChargeRequest,
    ChargeResult,
    Outcome,
    RefundRequest,
    RefundResult,
    Settlement,
    SettlementStatus,
    VaultedMethod,
    VaultRequest,
)
from worker.psp.common import (
    CODE_MAX,
    amount_string,
    clip,
    paypal_fingerprint,
    require_settings,
)
from worker.psp.errors import TransportError, VaultRefused, VaultUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUIRED_SETTINGS = (
    ("BRAINTREE_MERCHANT_ID", "braintree_merchant_id"),
    ("BRAINTREE_PUBLIC_KEY", "braintree_public_key"),
    ("BRAINTREE_PRIVATE_KEY", "braintree_private_key"),
)

# Braintree transaction statuses (braintree.Transaction.Status).
_SUCCEEDED = frozenset(
    {
        "submitted_for_settlement",
        "settling",
        "settlement_pending",
        "settled",
        "settlement_confirmed",
    }
)
_IN_FLIGHT = frozenset({"authorizing", "authorized"})
_SETTLED = frozenset({"settled", "settlement_confirmed"})
_SETTLING = frozenset({"submitted_for_settlement", "settling", "settlement_pending", "authorized"})
AUTHENTICATION_REQUIRED = "2099"  # processor response "Cardholder Authentication Required"
CUSTOMER_ID_TAKEN = "91609"  # validation error: "Customer ID has already been taken"


def check_settings(settings: Settings) -> None:
    """Start-up check for PSP_ENABLED=braintree_gateway: credentials present, base URL usable.

    Raises SettingsError naming the setting."""
    require_settings(settings, BraintreeAdapter.name, REQUIRED_SETTINGS)
    _environment(settings)


def _environment(settings: Settings) -> braintree.Environment:
    if settings.braintree_base_url is None:
        return braintree.Environment.All[settings.braintree_environment]
    url = urlsplit(settings.braintree_base_url)
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    # The SDK speaks TLS exactly when the port is 443 (braintree/environment.py).
    if https != (port == 443):
        raise SettingsError("BRAINTREE_BASE_URL: use https on port 443, or http on another port")
    certificate = certifi.where() if https else None
    return braintree.Environment("custom", url.hostname, str(port), "", https, certificate)


_gateways: dict[tuple[Any, ...], braintree.BraintreeGateway] = {}
_default_currencies: dict[tuple[Any, ...], str | None] = {}
_gateways_lock = threading.Lock()


def _gateway_key(settings: Settings) -> tuple[Any, ...]:
    secret = settings.braintree_private_key
    digest = hashlib.sha256(secret.get_secret_value().encode()).hexdigest() if secret else ""
    return (
        os.getpid(),  # a forked child builds its own (no shared keep-alive sockets)
        settings.braintree_environment,
        settings.braintree_base_url,
        settings.braintree_merchant_id,
        settings.braintree_public_key,
        digest,
        settings.psp_http_timeout_seconds,
    )


def _gateway_for(settings: Settings) -> braintree.BraintreeGateway:
    """One SDK gateway per process and configuration: the SDK keeps a `requests` session per
    thread inside it, so connections (and TLS handshakes) are reused between charges."""
    key = _gateway_key(settings)
    gateway = _gateways.get(key)
    if gateway is not None:
        return gateway
    with _gateways_lock:
        gateway = _gateways.get(key)
        if gateway is None:
            assert settings.braintree_private_key is not None  # check_settings ran
            config = braintree.Configuration(
                environment=_environment(settings),
                merchant_id=settings.braintree_merchant_id,
                public_key=settings.braintree_public_key,
                private_key=settings.braintree_private_key.get_secret_value(),
                # One number for connect and read (requests' timeout): the worst case of a
                # charge is checked against CHARGE_LEASE_SECONDS at start-up.
                timeout=settings.psp_http_timeout_seconds,
                wrap_http_exceptions=False,  # we classify requests' own exceptions below
            )
            gateway = braintree.BraintreeGateway(config)
            _gateways[key] = gateway
    return gateway


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was never made (refused, DNS): nothing reached Braintree."""
    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3 MaxRetryError wraps the cause
    # NewConnectionError (refused, DNS: NameResolutionError) is a ConnectTimeoutError.
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def _call(what: str, fn: Callable[[], T]) -> T:
    """Run one SDK call; a transport problem becomes TransportError(sent=...).

    `sent=False` only when the request cannot have been processed (no connection, or an HTTP
    answer that says it was refused: 401, 403, 426, 429); everything else after connecting
    (timeout, lost connection, 5xx, unreadable answer) is `sent=True`. NotFoundError passes."""
    try:
        return fn()
    except requests.exceptions.ConnectTimeout:
        raise TransportError(f"Braintree {what}: connect timed out", sent=False) from None
    except requests.exceptions.ConnectionError as exc:
        if _never_connected(exc):
            raise TransportError(f"Braintree {what}: could not connect", sent=False) from None
        raise TransportError(f"Braintree {what}: connection lost", sent=True) from None
    except requests.exceptions.Timeout:
        raise TransportError(f"Braintree {what}: read timed out", sent=True) from None
    except requests.exceptions.RequestException as exc:
        raise TransportError(f"Braintree {what}: {type(exc).__name__}", sent=True) from None
    except (AuthenticationError, AuthorizationError, UpgradeRequiredError) as exc:
        log.error("Braintree refused our credentials or API version (%s)", type(exc).__name__)
        raise TransportError(f"Braintree {what}: {type(exc).__name__}", sent=False) from None
    except TooManyRequestsError:
        raise TransportError(f"Braintree {what}: too many requests", sent=False) from None
    except (
        ServerError,
        ServiceUnavailableError,
        GatewayTimeoutError,
        RequestTimeoutError,
        UnexpectedError,
        ExpatError,
    ) as exc:
        raise TransportError(f"Braintree {what}: {type(exc).__name__}", sent=True) from None


def _utc(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _first_error(result: Any) -> tuple[str, str]:
    errors = list(result.errors.deep_errors) if getattr(result, "errors", None) else []
    message = clip(getattr(result, "message", None)) or "refused"
    if errors:
        return clip(str(errors[0].code), CODE_MAX) or "error", message
    return "error", message


class BraintreeAdapter:
    """PSP_ENABLED name `braintree_gateway`: needs BRAINTREE_MERCHANT_ID, BRAINTREE_PUBLIC_KEY,
    BRAINTREE_PRIVATE_KEY (secret); BRAINTREE_ENVIRONMENT sandbox/production."""

    name = "braintree_gateway"
    on_demand = True

    def __init__(self, settings: Settings) -> None:
        check_settings(settings)
        self.settings = settings
        self.gateway = _gateway_for(settings)
        self._key = _gateway_key(settings)

    # -- vault ---------------------------------------------------------------------------

    def vault(self, request: VaultRequest) -> VaultedMethod:
        """Vault a nonce on the customer whose Braintree id is our account id, verifying a card
        (`options.verify_card`). Raises VaultRefused (VaultUnavailable when Braintree could not
        be asked)."""
        nonce = refuse_pan(request.nonce.strip(), "nonce")
        try:
            self._ensure_customer(request.customer_ref)
            result = _call(
                "vault",
                lambda: self.gateway.payment_method.create(
                    {
                        "customer_id": request.customer_ref,
                        "payment_method_nonce": nonce,
                        "options": {"verify_card": True},
                    }
                ),
            )
        except TransportError as exc:
            raise VaultUnavailable(
                "psp_unreachable", f"{exc}; try again with a new nonce"
            ) from None
        if not result.is_success:
            raise VaultRefused(*self._vault_refusal(result))
        return self._vaulted(result.payment_method)

    def _ensure_customer(self, customer_id: str) -> None:
        try:
            _call("customer", lambda: self.gateway.customer.find(customer_id))
            return
        except NotFoundError:
            pass
        result = _call("customer", lambda: self.gateway.customer.create({"id": customer_id}))
        if not result.is_success:
            code, text = _first_error(result)
            if code != CUSTOMER_ID_TAKEN:  # taken: a concurrent vault created it first
                raise VaultRefused(code, f"customer: {text}")

    @staticmethod
    def _vault_refusal(result: Any) -> tuple[str, str]:
        verification = getattr(result, "credit_card_verification", None)
        if verification is not None:
            code = getattr(verification, "processor_response_code", None)
            reason = getattr(verification, "gateway_rejection_reason", None)
            if code and str(code) == AUTHENTICATION_REQUIRED:
                return code, "card verification needs the cardholder to authenticate (3-D Secure)"
            text = getattr(verification, "processor_response_text", None) or reason
            status = getattr(verification, "status", "failed")
            return (
                clip(str(code or reason or status), CODE_MAX) or "verification_failed",
                clip(f"card verification failed: {text or status}") or "verification failed",
            )
        return _first_error(result)

    @staticmethod
    def _vaulted(method: Any) -> VaultedMethod:
        token = str(method.token)
        if isinstance(method, braintree.CreditCard):
            unique = getattr(method, "unique_number_identifier", None)
            if not unique:
                raise VaultRefused("no_fingerprint", "Braintree gave no card fingerprint")
            brand = clip(getattr(method, "card_type", None), 32) or "Card"
            last4 = str(getattr(method, "last_4", "") or "")[-4:] or None
            month, year = getattr(method, "expiration_month", None), method.expiration_year
            return VaultedMethod(
                type="card",
                token=token,
                fingerprint=f"braintree-card:{unique}",
                display=f"{brand} ending {last4}" if last4 else brand,
                brand=brand,
                last4=last4,
                expiry=f"{int(month):02d}/{year}" if month and year else None,
            )
        if isinstance(method, braintree.PayPalAccount):
            email = getattr(method, "email", None) or None
            fingerprint = paypal_fingerprint(getattr(method, "payer_id", None), email)
            if fingerprint is None:
                raise VaultRefused("no_fingerprint", "Braintree gave no PayPal payer")
            return VaultedMethod(
                type="paypal",
                token=token,
                fingerprint=fingerprint,
                display=f"PayPal {email}" if email else "PayPal",
                payer_email=email,
            )
        raise VaultRefused(
            "unsupported_method", f"{type(method).__name__} is not accepted (card or PayPal)"
        )

    # -- charge ----------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """One sale per key: search the key first, send `Transaction.sale` only when Braintree
        holds no sale for it that reached the processor. Never raises for a decline or a
        transport problem."""
        try:
            earlier = self._decisive(self._sales_for(request.idempotency_key))
            merchant_account = self._merchant_account_for(request.currency)
        except TransportError as exc:  # only asked so far: nothing was sent for this key
            return ChargeResult(Outcome.NOT_ATTEMPTED, None, "unreachable", clip(str(exc)))
        except _NoMerchantAccount as exc:
            log.error("Braintree: %s", exc)
            return ChargeResult(Outcome.NOT_ATTEMPTED, None, "no_merchant_account", clip(str(exc)))
        if earlier is not None:
            return earlier
        params: dict[str, Any] = {
            "amount": amount_string(request.amount_minor, request.currency),
            "payment_method_token": request.token,
            "order_id": request.idempotency_key,
            "options": {"submit_for_settlement": True},
        }
        if merchant_account is not None:
            params["merchant_account_id"] = merchant_account
        if request.merchant_initiated:
            params["transaction_source"] = "unscheduled"
        try:
            result = _call("sale", lambda: self.gateway.transaction.sale(params))
        except TransportError as exc:
            if exc.sent:
                log.warning("Braintree sale %s: no answer (%s)", request.idempotency_key, exc)
                return ChargeResult(Outcome.UNKNOWN, None, "timeout", clip(str(exc)))
            return ChargeResult(Outcome.NOT_ATTEMPTED, None, "unreachable", clip(str(exc)))
        transaction = getattr(result, "transaction", None)
        if transaction is None:  # a validation error: nothing was created
            code, text = _first_error(result)
            return ChargeResult(Outcome.DECLINED, None, code, text)
        answer = _result(transaction)
        currency = getattr(transaction, "currency_iso_code", None)
        if currency and currency != request.currency and answer.outcome is Outcome.SUCCEEDED:
            log.error(
                "Braintree sale %s (%s) was taken in %s, not %s: check BRAINTREE_MERCHANT_ACCOUNTS",
                transaction.id,
                request.idempotency_key,
                currency,
                request.currency,
            )
            return ChargeResult(
                Outcome.UNKNOWN, answer.psp_reference, "currency_mismatch", f"taken in {currency}"
            )
        return answer

    def lookup(self, idempotency_key: str) -> ChargeResult | None:
        """Braintree's answer for our key (a search by `order_id`), None when no sale with it
        reached the processor. Raises TransportError when Braintree cannot be asked."""
        return self._decisive(self._sales_for(idempotency_key))

    def _sales_for(self, key: str) -> list[Any]:
        def search() -> list[Any]:
            found = self.gateway.transaction.search(
                braintree.TransactionSearch.order_id == key,
                braintree.TransactionSearch.type == braintree.Transaction.Type.Sale,
            )
            return list(found.items)

        # Text search may not be exact (case): only the key itself counts.
        return [t for t in _call("search", search) if getattr(t, "order_id", None) == key]

    @staticmethod
    def _decisive(sales: list[Any]) -> ChargeResult | None:
        """The one answer a key's sales give: a success first, then one in flight, then the
        latest that reached the processor; None when all failed before it (or there are none).
        """
        if not sales:
            return None
        ordered = sorted(sales, key=lambda t: _utc(getattr(t, "created_at", None)) or _EPOCH)
        succeeded = [t for t in ordered if t.status in _SUCCEEDED]
        if len(succeeded) > 1:
            log.error(
                "Braintree holds %d successful sales for one key %s: %s (refund all but one)",
                len(succeeded),
                succeeded[0].order_id,
                ", ".join(str(t.id) for t in succeeded),
            )
        if succeeded:
            return _result(succeeded[0])
        in_flight = [t for t in ordered if t.status in _IN_FLIGHT]
        if in_flight:
            return _result(in_flight[0])
        reached = [t for t in ordered if t.status != "failed"]
        return _result(reached[-1]) if reached else None

    def _merchant_account_for(self, currency: str) -> str | None:
        """The merchant account that charges in `currency`: BRAINTREE_MERCHANT_ACCOUNTS, else
        Braintree's default one when it is in that currency (asked once per process)."""
        mapped = self.settings.braintree_merchant_accounts.get(currency)
        if mapped is not None:
            return mapped
        if self._key not in _default_currencies:

            def default_currency() -> str | None:
                listing = self.gateway.merchant_account.all().merchant_accounts
                for account in listing.items:
                    if getattr(account, "default", False):
                        return str(account.currency_iso_code)
                return None

            _default_currencies[self._key] = _call("merchant accounts", default_currency)
        default = _default_currencies[self._key]
        if default != currency:
            raise _NoMerchantAccount(
                f"no merchant account charges {currency} (the default one charges {default}); "
                f"add {currency}=ID to BRAINTREE_MERCHANT_ACCOUNTS"
            )
        return None

    # -- refund, settlement ----------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a settled sale (`Transaction.refund`). The refund carries our refund key as
        its `order_id` and is searched first, so a repeated key never refunds twice. A sale not
        settled yet is refused (91506, as Braintree does): refund it once it settled. (A void
        would take it back sooner, but cannot carry our key, so a second key could not be
        told from a repeat of the first.)"""
        try:
            earlier = self.lookup_refund(request.idempotency_key)
        except TransportError as exc:  # only asked: nothing was sent
            return _refund_transport(exc, sent=False)
        if earlier is not None:
            return earlier
        options = {
            "amount": amount_string(request.amount_minor, request.currency),
            "order_id": request.idempotency_key,
        }
        try:
            result = _call(
                "refund", lambda: self.gateway.transaction.refund(request.charge_reference, options)
            )
        except NotFoundError:
            return RefundResult(Outcome.DECLINED, None, "not_found", "no such transaction")
        except TransportError as exc:
            return _refund_transport(exc, sent=exc.sent)
        if result.is_success:
            return _refund_result(result.transaction)
        code, text = _first_error(result)
        return RefundResult(Outcome.DECLINED, None, code, text)

    def lookup_refund(
        self, idempotency_key: str, charge_reference: str | None = None
    ) -> RefundResult | None:
        """The refund made with this key: a Braintree refund is a `credit` transaction, and
        ours carries the key as its `order_id` (`refund` sets it), so a transaction search
        finds it by the key alone. None when Braintree holds no such credit. Raises
        TransportError when Braintree cannot be asked."""
        found = [
            t
            for t in _call("search", lambda: self._credits_for(idempotency_key))
            if getattr(t, "order_id", None) == idempotency_key
        ]
        return _refund_result(found[0]) if found else None

    def _credits_for(self, key: str) -> list[Any]:
        found = self.gateway.transaction.search(
            braintree.TransactionSearch.order_id == key,
            braintree.TransactionSearch.type == braintree.Transaction.Type.Credit,
        )
        return list(found.items)

    def settlement_status(self, psp_reference: str) -> SettlementStatus:
        """Whether the sale `psp_reference` has settled (Braintree `settled`), for the rule that
        a card payment's final invoice waits for settlement. Raises TransportError."""
        try:
            sale = _call("find", lambda: self.gateway.transaction.find(psp_reference))
        except NotFoundError:
            return SettlementStatus(Settlement.FAILED, "not_found")
        status = str(sale.status)
        if status in _SETTLED:
            at = None
            for event in getattr(sale, "status_history", None) or []:
                if getattr(event, "status", None) in _SETTLED:
                    at = _utc(getattr(event, "timestamp", None))
            return SettlementStatus(Settlement.SETTLED, status, at)
        if status in _SETTLING:
            return SettlementStatus(Settlement.SETTLING, status)
        return SettlementStatus(Settlement.FAILED, status)


class _NoMerchantAccount(Exception):
    pass


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _result(transaction: Any) -> ChargeResult:
    """One Braintree transaction as a ChargeResult (see the module docstring's table)."""
    status = str(transaction.status)
    reference = str(transaction.id)
    processed = _utc(getattr(transaction, "created_at", None))
    if status in _SUCCEEDED:
        return ChargeResult(Outcome.SUCCEEDED, reference, None, None, processed)
    if status in _IN_FLIGHT:
        return ChargeResult(Outcome.PENDING, reference, status, f"Braintree status {status}")
    code = getattr(transaction, "processor_response_code", None)
    text = getattr(transaction, "processor_response_text", None)
    if status == "processor_declined":
        if str(code) == AUTHENTICATION_REQUIRED:
            return ChargeResult(Outcome.REQUIRES_ACTION, reference, AUTHENTICATION_REQUIRED, text)
        kind = getattr(transaction, "processor_response_type", None)
        suffix = {"soft_declined": " (soft decline)", "hard_declined": " (hard decline)"}
        return ChargeResult(
            Outcome.DECLINED,
            reference,
            clip(code, CODE_MAX) or "processor_declined",
            clip(f"{text or 'Processor Declined'}{suffix.get(str(kind), '')}"),
        )
    if status == "gateway_rejected":
        reason = getattr(transaction, "gateway_rejection_reason", None) or "unknown"
        return ChargeResult(
            Outcome.DECLINED, reference, "gateway_rejected", clip(f"Gateway Rejected: {reason}")
        )
    if status == "failed":  # the processor could not be reached: nothing was authorised
        return ChargeResult(
            Outcome.NOT_ATTEMPTED,
            reference,
            clip(code, CODE_MAX) or "3000",
            clip(text) or "Processor Network Unavailable - Try Again",
        )
    if status == "settlement_declined":
        settlement_code = getattr(transaction, "processor_settlement_response_code", None)
        settlement_text = getattr(transaction, "processor_settlement_response_text", None)
        return ChargeResult(
            Outcome.DECLINED,
            reference,
            clip(settlement_code, CODE_MAX) or "settlement_declined",
            clip(settlement_text) or "settlement declined",
        )
    if status in ("voided", "authorization_expired"):
        return ChargeResult(Outcome.DECLINED, reference, status, f"Braintree status {status}")
    return ChargeResult(Outcome.UNKNOWN, reference, clip(status, CODE_MAX), "unrecognised status")


def _refund_result(transaction: Any) -> RefundResult:
    status = str(transaction.status)
    if status in _SUCCEEDED or status in _IN_FLIGHT:
        return RefundResult(Outcome.SUCCEEDED, str(transaction.id))
    return RefundResult(
        Outcome.DECLINED,
        str(transaction.id),
        clip(getattr(transaction, "processor_response_code", None), CODE_MAX) or status,
        clip(getattr(transaction, "processor_response_text", None)),
    )


def _refund_transport(exc: TransportError, *, sent: bool) -> RefundResult:
    if sent:
        return RefundResult(Outcome.UNKNOWN, None, "timeout", clip(str(exc)))
    return RefundResult(Outcome.NOT_ATTEMPTED, None, "unreachable", clip(str(exc)))
