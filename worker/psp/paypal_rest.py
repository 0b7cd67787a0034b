"""PayPal through its REST API over httpx: OAuth2 client credentials, a PayPal account vaulted
as a payment token (Vault v3), a charge as an order created and captured with our key.

Idempotency and look-up. Every order is created with `PayPal-Request-Id` derived from our key
(at most 108 characters). PayPal documents that a request repeating a PayPal-Request-Id gets
"the latest status of the previous request that used that same header" instead of a second
action (developer.paypal.com/reference/guidelines/idempotency; Orders v2 keeps the id 6 hours by
default, up to 72 on request). So:
- charging a key twice returns the first order's latest state: one payment per key;
- a look-up *re-sends the create with the same PayPal-Request-Id*, but with a body that cannot
  take money (no payment source: such an order waits for a payer's approval that never comes).
  When PayPal knows the id it answers with the original order (COMPLETED and its capture,
  PAYER_ACTION_REQUIRED, ...); when it does not, the original never arrived and the new order
  is merely CREATED: nothing was taken, the look-up says None, and the id is now spent on an
  order that cannot pay, so a request of ours still in flight cannot charge later either.
  PayPal's Orders API has no search by our reference and its Transaction Search lags up to
  three hours, so this is the one documented way to learn an order's fate from the key alone
  (the stored order id is only known once an answer arrived, which is exactly the case a
  look-up is not for).
- `invoice_id` is our key too: with PayPal's "block duplicate invoice ids" setting a payment
  can never be taken twice for one key even after the request id expired; a look-up that
  meets DUPLICATE_INVOICE_ID reports `unknown` (the janitor keeps asking, then asks an
  operator): a payment exists that the request id no longer finds.

Outcomes: order COMPLETED with its capture COMPLETED -> succeeded (`psp_reference` is the
capture id: refunds and settlement use it), capture PENDING -> pending, capture DECLINED or
FAILED, 422 INSTRUMENT_DECLINED / TRANSACTION_REFUSED / ... -> declined, order
PAYER_ACTION_REQUIRED (or the issue) -> requires_action, 429, 401/403 and no connection ->
not_attempted, 5xx and timeouts after sending -> unknown.
Longer than 400 lines on purpose: one PSP is one module (OAuth, vault, order create and
capture, the look-up by request id, refund and the status mapping share one HTTP client).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from config import Settings
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
    safe_reference,
)
from worker.psp.errors import (
    RefundLookUpUnsupported,
    TransportError,
    VaultRefused,
    VaultUnavailable,
)

log = logging.getLogger(__name__)

REQUIRED_SETTINGS = (
    ("PAYPAL_CLIENT_ID", "paypal_client_id"),
    ("PAYPAL_CLIENT_SECRET", "paypal_client_secret"),
)
REQUEST_ID_MAX = 108  # PayPal-Request-Id, Orders v2 and Vault v3
INVOICE_ID_MAX = 127  # purchase_units[].invoice_id and custom_id
_TOKEN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_ORDER_PATH = re.compile(r"/v2/checkout/orders/[0-9A-Za-z_-]{1,64}$")
# 422 issues that mean this payment method will not pay this order (Orders v2 errors).
_DECLINE_ISSUES = frozenset(
    {
        "INSTRUMENT_DECLINED",
        "TRANSACTION_REFUSED",
        "PAYER_CANNOT_PAY",
        "PAYEE_BLOCKED_TRANSACTION",
        "COMPLIANCE_VIOLATION",
        "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED",
        "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING",
        "PAYER_ACCOUNT_LOCKED_OR_CLOSED",
        "PAYER_ACCOUNT_RESTRICTED",
        "INVALID_RESOURCE_ID",  # the vault id (payment token) is unknown or deleted
    }
)
_UNCLEAR_ISSUES = frozenset({"DUPLICATE_INVOICE_ID", "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"})
PAYER_ACTION_REQUIRED = "PAYER_ACTION_REQUIRED"


def check_settings(settings: Settings) -> None:
    """Start-up check for PSP_ENABLED=paypal_rest. Raises SettingsError naming the setting."""
    require_settings(settings, PaypalRestAdapter.name, REQUIRED_SETTINGS)


class _Answer:
    """An HTTP answer from PayPal: status and JSON body (empty dict when there is none)."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}

    @property
    def issue(self) -> str:
        details = self.body.get("details") or []
        if details and isinstance(details[0], dict) and details[0].get("issue"):
            return str(details[0]["issue"])
        return str(self.body.get("name") or self.body.get("error") or f"http_{self.status}")

    @property
    def description(self) -> str:
        details = self.body.get("details") or []
        if details and isinstance(details[0], dict) and details[0].get("description"):
            return str(details[0]["description"])
        return str(self.body.get("message") or self.body.get("error_description") or "")


class _Session:
    """One httpx client and one OAuth2 token per process and configuration (PayPal limits
    token requests; a token lasts hours). Thread-safe: one thread refreshes, others wait."""

    def __init__(self, settings: Settings) -> None:
        assert settings.paypal_client_secret is not None  # check_settings ran
        self._auth = (
            str(settings.paypal_client_id),
            settings.paypal_client_secret.get_secret_value(),
        )
        self.client = httpx.Client(
            base_url=settings.paypal_base_url,
            timeout=httpx.Timeout(settings.psp_http_timeout_seconds),
            headers={"Accept": "application/json"},
        )
        self._token: str | None = None
        self._valid_until = 0.0  # time.monotonic()
        self._lock = threading.Lock()

    def token(self) -> str:
        token = self._token
        if token is not None and time.monotonic() < self._valid_until:
            return token
        with self._lock:
            if self._token is not None and time.monotonic() < self._valid_until:
                return self._token
            answer = self._send("token", "POST", "/v1/oauth2/token", authorised=False)
            token = answer.body.get("access_token")
            if answer.status != 200 or not isinstance(token, str):
                if answer.status in (400, 401, 403):
                    log.error("PayPal refused our client credentials (%s)", answer.issue)
                # Only a token was asked for: nothing about a payment was sent.
                raise TransportError(f"PayPal token: {answer.issue}", sent=False)
            lifetime = float(answer.body.get("expires_in") or 0)
            # Renewed shortly before it expires: a minute early, or a tenth of a short one.
            self._valid_until = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            self._token = token
            return token

    def forget_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _send(
        self,
        what: str,
        method: str,
        path: str,
        *,
        authorised: bool = True,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> _Answer:
        try:
            if authorised:
                token = self.token()
                response = self.client.request(
                    method,
                    path,
                    json=json,
                    headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                )
                if response.status_code == 401:  # refused, not processed: a fresh token, once
                    self.forget_token(token)
                    response = self.client.request(
                        method,
                        path,
                        json=json,
                        headers={**(headers or {}), "Authorization": f"Bearer {self.token()}"},
                    )
            else:
                response = self.client.request(
                    method,
                    path,
                    data={"grant_type": "client_credentials"},
                    auth=self._auth,
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            raise TransportError(f"PayPal {what}: could not connect", sent=False) from None
        except httpx.TimeoutException:
            raise TransportError(f"PayPal {what}: timed out", sent=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"PayPal {what}: {type(exc).__name__}", sent=True) from None
        return _Answer(response)

    def send(
        self, what: str, method: str, path: str, *, json: Any = None, request_id: str | None = None
    ) -> _Answer:
        """One API call with a bearer token. Raises TransportError: `sent=False` when PayPal
        cannot have acted (no connection, no token, 401/403 after a fresh token, 429),
        `sent=True` after sending without an answer or with a 5xx."""
        headers = {"Prefer": "return=representation"}
        if request_id is not None:
            headers["PayPal-Request-Id"] = request_id
        answer = self._send(what, method, path, json=json, headers=headers)
        if answer.status in (401, 403):
            log.error("PayPal refused a %s call (%s %s)", what, answer.status, answer.issue)
            raise TransportError(f"PayPal {what}: {answer.issue}", sent=False)
        if answer.status == 429:
            raise TransportError(f"PayPal {what}: rate limited", sent=False)
        if answer.status >= 500:
            raise TransportError(f"PayPal {what}: {answer.status} {answer.issue}", sent=True)
        return answer


_sessions: dict[tuple[Any, ...], _Session] = {}
_sessions_lock = threading.Lock()


def _session_for(settings: Settings) -> _Session:
    secret = settings.paypal_client_secret
    key = (
        os.getpid(),  # a forked child opens its own connections
        settings.paypal_base_url,
        settings.paypal_client_id,
        hashlib.sha256(secret.get_secret_value().encode()).hexdigest() if secret else "",
        settings.psp_http_timeout_seconds,
    )
    session = _sessions.get(key)
    if session is None:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = _sessions[key] = _Session(settings)
    return session


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _refund_state(refund: dict[str, Any]) -> RefundResult:
    """A PayPal refund (as created, or listed in its order) as a RefundResult."""
    status = str(refund.get("status"))
    reference = clip(refund.get("id"), 120)
    if status == "COMPLETED":
        return RefundResult(Outcome.SUCCEEDED, reference)
    if status == "PENDING":
        return RefundResult(Outcome.PENDING, reference, status, "refund pending")
    return RefundResult(Outcome.DECLINED, reference, clip(status, CODE_MAX), "refund " + status)


def _up_link(capture: dict[str, Any]) -> str | None:
    """The path of a capture's order (its HATEOAS `up` link), if it names one."""
    for link in capture.get("links") or []:
        href = str(link.get("href") or "")
        if link.get("rel") == "up" and (match := _ORDER_PATH.search(href)):
            return match[0]
    return None


def _capture(order: dict[str, Any]) -> dict[str, Any] | None:
    for unit in order.get("purchase_units") or []:
        captures = ((unit or {}).get("payments") or {}).get("captures") or []
        if captures and isinstance(captures[0], dict):
            return captures[0]
    return None


def _payer_action(order: dict[str, Any]) -> str:
    for link in order.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "payer-action":
            return f"the payer must act at PayPal: {link.get('href')}"
    return "the payer must act at PayPal"


def _capture_result(order: dict[str, Any]) -> ChargeResult:
    """An order PayPal says is COMPLETED: what its capture says."""
    capture = _capture(order)
    if capture is None:
        return ChargeResult(Outcome.UNKNOWN, str(order.get("id")), "no_capture", "order has none")
    reference = clip(capture.get("id"), 120)
    status = str(capture.get("status"))
    if status in ("COMPLETED", "REFUNDED", "PARTIALLY_REFUNDED"):
        return ChargeResult(
            Outcome.SUCCEEDED, reference, None, None, _moment(capture.get("create_time"))
        )
    reason = (capture.get("status_details") or {}).get("reason")
    if status == "PENDING":
        return ChargeResult(Outcome.PENDING, reference, clip(reason, CODE_MAX), "capture pending")
    return ChargeResult(
        Outcome.DECLINED, reference, clip(f"CAPTURE_{status}", CODE_MAX), clip(reason) or status
    )


class PaypalRestAdapter:
    """PSP_ENABLED name `paypal_rest`: needs PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET (secret);
    PAYPAL_BASE_URL (sandbox by default, https://api-m.paypal.com for live)."""

    name = "paypal_rest"
    on_demand = True

    def __init__(self, settings: Settings) -> None:
        check_settings(settings)
        self.settings = settings
        self.session = _session_for(settings)

    def vault(self, request: VaultRequest) -> VaultedMethod:
        """The nonce is a setup token the payer approved (PayPal JS SDK): it becomes a payment
        token (`POST /v3/vault/payment-tokens`). Raises VaultRefused (VaultUnavailable when
        PayPal could not be asked)."""
        nonce = refuse_pan(request.nonce.strip(), "nonce")
        if not _TOKEN_ID.fullmatch(nonce):
            raise VaultRefused("invalid_nonce", "not a PayPal setup token id")
        body = {"payment_source": {"token": {"id": nonce, "type": "SETUP_TOKEN"}}}
        request_id = "vault-" + hashlib.sha256(nonce.encode()).hexdigest()[:64]
        try:
            answer = self.session.send(
                "vault", "POST", "/v3/vault/payment-tokens", json=body, request_id=request_id
            )
        except TransportError as exc:
            raise VaultUnavailable("psp_unreachable", f"{exc}; try again") from None
        if answer.status not in (200, 201):
            raise VaultRefused(
                clip(answer.issue, CODE_MAX) or "refused", clip(answer.description) or "refused"
            )
        source = answer.body.get("payment_source") or {}
        paypal = source.get("paypal")
        token = answer.body.get("id")
        if not isinstance(paypal, dict) or not isinstance(token, str):
            raise VaultRefused("unsupported_method", "only a PayPal account is vaulted here")
        email = paypal.get("email_address") or None
        fingerprint = paypal_fingerprint(paypal.get("payer_id"), email)
        if fingerprint is None:
            raise VaultRefused("no_fingerprint", "PayPal gave no payer")
        return VaultedMethod(
            type="paypal",
            token=token,
            fingerprint=fingerprint,
            display=f"PayPal {email}" if email else "PayPal",
            payer_email=email,
        )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Create the order with the vaulted account (PayPal completes it at once), capture it
        if PayPal left it APPROVED. Never raises for a decline or a transport problem."""
        key = request.idempotency_key
        unit = {
            "custom_id": safe_reference(key, INVOICE_ID_MAX),
            "invoice_id": safe_reference(key, INVOICE_ID_MAX),
            "description": clip(request.description, 127) or "top-up",
            "amount": {
                "currency_code": request.currency,
                "value": amount_string(request.amount_minor, request.currency),
            },
        }
        body = {
            "intent": "CAPTURE",
            "purchase_units": [unit],
            "payment_source": {"paypal": {"vault_id": request.token}},
        }
        try:
            answer = self.session.send(
                "order",
                "POST",
                "/v2/checkout/orders",
                json=body,
                request_id=safe_reference(key, REQUEST_ID_MAX),
            )
            if answer.status in (200, 201) and answer.body.get("status") == "APPROVED":
                order_id = str(answer.body.get("id"))
                answer = self.session.send(
                    "capture",
                    "POST",
                    f"/v2/checkout/orders/{order_id}/capture",
                    json={},
                    request_id=safe_reference(f"capture:{key}", REQUEST_ID_MAX),
                )
        except TransportError as exc:
            if exc.sent:
                log.warning("PayPal order %s: no answer (%s)", key, exc)
                return ChargeResult(Outcome.UNKNOWN, None, "timeout", clip(str(exc)))
            return ChargeResult(Outcome.NOT_ATTEMPTED, None, "unreachable", clip(str(exc)))
        if answer.status not in (200, 201):
            return self._refusal(answer)
        order = answer.body
        status = order.get("status")
        if status == "COMPLETED":
            return _capture_result(order)
        if status == PAYER_ACTION_REQUIRED:
            text = clip(_payer_action(order))
            return ChargeResult(Outcome.REQUIRES_ACTION, str(order.get("id")), status, text)
        if status in ("CREATED", "SAVED"):  # not payable without a payer (a look-up's order)
            return ChargeResult(
                Outcome.NOT_ATTEMPTED, str(order.get("id")), "order_not_approved", str(status)
            )
        if status == "VOIDED":
            return ChargeResult(Outcome.DECLINED, str(order.get("id")), "VOIDED", "order voided")
        return ChargeResult(
            Outcome.UNKNOWN, clip(order.get("id"), 120), clip(status, CODE_MAX), "unclear order"
        )

    @staticmethod
    def _refusal(answer: _Answer) -> ChargeResult:
        issue = answer.issue
        text = clip(answer.description) or issue
        if issue == PAYER_ACTION_REQUIRED:
            return ChargeResult(Outcome.REQUIRES_ACTION, None, issue, text)
        if issue in _UNCLEAR_ISSUES:
            log.error("PayPal answered %s: a payment for this key may exist", issue)
            return ChargeResult(Outcome.UNKNOWN, None, issue, text)
        return ChargeResult(Outcome.DECLINED, None, clip(issue, CODE_MAX), text)

    def lookup(self, idempotency_key: str) -> ChargeResult | None:
        """Re-send the create with the key's PayPal-Request-Id and a body that cannot pay (see
        the module docstring). None when PayPal never received our order. Raises
        TransportError when PayPal cannot be asked or gives no usable answer."""
        ref = safe_reference(idempotency_key, INVOICE_ID_MAX)
        body = {
            "intent": "CAPTURE",
            "purchase_units": [
                {
                    "custom_id": ref,
                    "invoice_id": ref,
                    "description": "look-up of an earlier order (cannot be paid)",
                    "amount": {
                        "currency_code": self.settings.default_currency,
                        "value": amount_string(1, self.settings.default_currency),
                    },
                }
            ],
        }
        answer = self.session.send(
            "look-up",
            "POST",
            "/v2/checkout/orders",
            json=body,
            request_id=safe_reference(idempotency_key, REQUEST_ID_MAX),
        )
        if answer.status not in (200, 201):
            if answer.issue in _UNCLEAR_ISSUES:
                return ChargeResult(Outcome.UNKNOWN, None, answer.issue, clip(answer.description))
            raise TransportError(f"PayPal look-up: {answer.issue}", sent=True)
        order = answer.body
        status = order.get("status")
        if status == "COMPLETED":
            return _capture_result(order)
        if status == PAYER_ACTION_REQUIRED:
            return ChargeResult(
                Outcome.REQUIRES_ACTION, str(order.get("id")), status, clip(_payer_action(order))
            )
        if status == "APPROVED":  # approved, never captured: an operator decides
            return ChargeResult(Outcome.UNKNOWN, str(order.get("id")), "APPROVED", "not captured")
        return None  # CREATED/SAVED (our look-up's own order), VOIDED: nothing was taken

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a capture (`psp_reference` of the charge) with its own PayPal-Request-Id, so
        a repeated refund key never refunds twice."""
        capture = request.charge_reference
        if not _TOKEN_ID.fullmatch(capture):
            return RefundResult(Outcome.DECLINED, None, "not_found", "not a PayPal capture id")
        body = {
            "amount": {
                "currency_code": request.currency,
                "value": amount_string(request.amount_minor, request.currency),
            },
            "invoice_id": safe_reference(request.idempotency_key, INVOICE_ID_MAX),
        }
        try:
            answer = self.session.send(
                "refund",
                "POST",
                f"/v2/payments/captures/{capture}/refund",
                json=body,
                request_id=safe_reference(f"refund:{request.idempotency_key}", REQUEST_ID_MAX),
            )
        except TransportError as exc:
            if exc.sent:
                return RefundResult(Outcome.UNKNOWN, None, "timeout", clip(str(exc)))
            return RefundResult(Outcome.NOT_ATTEMPTED, None, "unreachable", clip(str(exc)))
        if answer.status == 404:
            return RefundResult(Outcome.DECLINED, None, "not_found", "no such capture")
        if answer.status not in (200, 201):
            return RefundResult(
                Outcome.DECLINED, None, clip(answer.issue, CODE_MAX), clip(answer.description)
            )
        return _refund_state(answer.body)

    def lookup_refund(
        self, idempotency_key: str, charge_reference: str | None = None
    ) -> RefundResult | None:
        """The refund of the capture `charge_reference` made with this key, read, never
        re-sent (a re-POST with the same PayPal-Request-Id would make the refund if PayPal
        never had it, or again once the id's storage ran out). PayPal has no search by our
        reference, but a refund carries our key as its `invoice_id` and the capture's order
        lists its refunds (`GET /v2/payments/captures/{id}`, its `up` link to the order,
        `GET /v2/checkout/orders/{id}`: `purchase_units[].payments.refunds[]`). None when the
        order holds no refund with our key (or there is no such capture). Raises
        RefundLookUpUnsupported without a capture id, TransportError when PayPal cannot be asked."""
        capture = charge_reference or ""
        if not _TOKEN_ID.fullmatch(capture):
            raise RefundLookUpUnsupported(
                "a PayPal refund is looked up through its capture: none given"
            )
        answer = self.session.send("capture", "GET", f"/v2/payments/captures/{capture}")
        if answer.status == 404:
            return None  # no such capture: nothing of it can have been refunded
        if answer.status != 200:
            raise TransportError(f"PayPal capture: {answer.issue}", sent=True)
        order_path = _up_link(answer.body)
        if order_path is None:
            raise TransportError("PayPal capture: no link to its order", sent=True)
        order = self.session.send("order", "GET", order_path)
        if order.status != 200:
            raise TransportError(f"PayPal order: {order.issue}", sent=True)
        ours = safe_reference(idempotency_key, INVOICE_ID_MAX)
        for unit in order.body.get("purchase_units") or []:
            for refund in (unit.get("payments") or {}).get("refunds") or []:
                if refund.get("invoice_id") == ours:
                    return _refund_state(refund)
        return None

    def settlement_status(self, psp_reference: str) -> SettlementStatus:
        """A capture's state: COMPLETED (or refunded since) is settled in the merchant's
        PayPal balance, PENDING is on its way. Raises TransportError."""
        if not _TOKEN_ID.fullmatch(psp_reference):
            return SettlementStatus(Settlement.FAILED, "not_found")
        answer = self.session.send("capture", "GET", f"/v2/payments/captures/{psp_reference}")
        if answer.status == 404:
            return SettlementStatus(Settlement.FAILED, "not_found")
        if answer.status != 200:
            raise TransportError(f"PayPal capture: {answer.issue}", sent=True)
        status = str(answer.body.get("status"))
        if status in ("COMPLETED", "REFUNDED", "PARTIALLY_REFUNDED"):
            at = _moment(answer.body.get("create_time"))
            return SettlementStatus(Settlement.SETTLED, status, at)
        if status == "PENDING":
            return SettlementStatus(Settlement.SETTLING, status)
        return SettlementStatus(Settlement.FAILED, status)
