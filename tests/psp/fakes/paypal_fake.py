"""A fake of PayPal's REST API for the endpoints `worker/psp/paypal_rest.py` uses, over real
HTTP (httpx talks to it like to api-m.paypal.com).

Shapes follow PayPal's API reference: `POST /v1/oauth2/token` (client credentials, Basic auth),
`POST /v3/vault/payment-tokens` (from an approved setup token), `POST /v2/checkout/orders`
(intent CAPTURE; a `payment_source.paypal.vault_id` order completes at once with its capture in
`purchase_units[0].payments.captures[0]`; without a payment source it is CREATED and waits for
a payer), `POST /v2/checkout/orders/{id}/capture`, `POST /v2/payments/captures/{id}/refund`,
`GET /v2/payments/captures/{id}` (with its `up` link to the order), `GET
/v2/checkout/orders/{id}` (its refunds in `purchase_units[0].payments.refunds`); errors as
`{name, message, debug_id, details: [{issue, description}]}`.

Idempotency as PayPal documents it (reference/guidelines/idempotency): a POST repeating a
PayPal-Request-Id gets the latest state of what the first one did (here: whatever the body);
`forget_request_ids()` is the storage window running out. `block_duplicate_invoice` is the
account setting that refuses a second payment for one `invoice_id` (DUPLICATE_INVOICE_ID).

Fake-only conventions (PayPal's sandbox uses mock headers instead): amounts 2000.00-2999.99
are INSTRUMENT_DECLINED except 2099.00, PAYER_ACTION_REQUIRED; 3000.00-3000.99 answer 429;
`hang_amounts` complete (or are refunded), then answer after `hang_seconds`;
`error_amounts` complete, then answer 500; `pending_amounts` leave the capture
PENDING; `approve_only` leaves vault orders APPROVED (the adapter must capture them).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from tests.psp.fakes.http import Request, Response

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-not-a-secret"


def _json(status: int, body: Any, delay: float = 0.0) -> Response:
    return Response(status, json.dumps(body).encode(), "application/json", delay=delay)


def _error(status: int, name: str, issue: str, description: str, message: str = "") -> Response:
    body = {
        "name": name,
        "message": message or "The requested action could not be performed.",
        "debug_id": uuid.uuid4().hex[:13],
        "details": [{"issue": issue, "description": description}],
    }
    return _json(status, body)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PaypalFake:
    token_lifetime: int = 32400
    block_duplicate_invoice: bool = True
    hang_amounts: set[str] = field(default_factory=set)
    hang_seconds: float = 2.0
    error_amounts: set[str] = field(default_factory=set)
    pending_amounts: set[str] = field(default_factory=set)
    approve_only: bool = False
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry (monotonic)
    token_requests: int = 0
    setup_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunded_capture: dict[str, str] = field(default_factory=dict)  # refund id -> capture id
    request_ids: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # -- what tests do -------------------------------------------------------------------

    def approved_setup_token(self, tag: str = "") -> str:
        """A payer approved a setup token in PayPal's pop-up (the JS SDK's vaultSetupToken)."""
        ident = f"5C{next(self._ids):06d}{uuid.uuid4().hex[:6].upper()}"
        payer = "P" + hashlib.sha256(tag.encode()).hexdigest()[:12].upper()
        self.setup_tokens[ident] = {
            "payer_id": payer,
            "email_address": f"buyer+{tag}@example.com" if tag else "buyer@example.com",
        }
        return ident

    def captured(self, invoice_id: str) -> list[dict[str, Any]]:
        """Captures that took money for our key (COMPLETED, PENDING or refunded since)."""
        return [
            c
            for c in self.captures.values()
            if c["invoice_id"] == invoice_id and c["status"] not in ("DECLINED", "FAILED")
        ]

    def forget_request_ids(self) -> None:
        self.request_ids.clear()

    def expire_tokens(self) -> None:
        self.tokens.clear()

    # -- HTTP ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        with self._lock:
            if request.method == "POST" and request.path == "/v1/oauth2/token":
                return self._token(request)
            if not self._authorised(request):
                return _json(
                    401,
                    {"error": "invalid_token", "error_description": "Access Token not found"},
                )
            body = json.loads(request.body) if request.body else {}
            request_id = request.headers.get("paypal-request-id")
            if request.method == "POST" and request_id is not None:
                earlier = self.request_ids.get((request.path, request_id))
                if earlier is not None:  # the latest state of what that request did
                    return self._replay(earlier)
            response, remembered = self._route(request.method, request.path, body)
            if request.method == "POST" and request_id is not None and remembered is not None:
                self.request_ids[(request.path, request_id)] = remembered
            return response

    def _token(self, request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        form = parse_qs(request.body.decode())
        if request.headers.get("authorization") != expected:
            return _json(
                401,
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
            )
        if form.get("grant_type") != ["client_credentials"]:
            return _json(400, {"error": "unsupported_grant_type"})
        self.token_requests += 1
        token = "A21AA" + uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + self.token_lifetime
        body = {
            "scope": "https://uri.paypal.com/services/payments/payment",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": self.token_lifetime,
            "nonce": _now() + uuid.uuid4().hex[:20],
        }
        return _json(200, body)

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        return header.startswith("Bearer ") and self.tokens.get(token, 0) > time.monotonic()

    def _replay(self, earlier: Any) -> Response:
        kind, ident = earlier
        if kind == "order":
            return _json(200, self._order_view(self.orders[ident]))
        if kind == "payment_token":
            return _json(200, self.payment_tokens[ident])
        if kind == "refund":
            return _json(200, self.refunds[ident])
        return earlier[1]  # ("response", Response): an error answered the first time

    def _route(self, method: str, path: str, body: dict[str, Any]) -> tuple[Response, Any]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v3/vault/payment-tokens":
            return self._vault(body)
        if method == "POST" and path == "/v2/checkout/orders":
            return self._create_order(body)
        if (
            method == "POST"
            and parts[:3] == ["v2", "checkout", "orders"]
            and parts[-1:] == ["capture"]
        ):
            return self._capture_order(parts[3])
        if (
            method == "POST"
            and parts[:3] == ["v2", "payments", "captures"]
            and parts[-1:] == ["refund"]
        ):
            return self._refund(parts[3], body)
        if method == "GET" and parts[:3] == ["v2", "checkout", "orders"] and len(parts) == 4:
            order = self.orders.get(parts[3])
            if order is None:
                return self._not_found(), None
            return _json(200, self._order_view(order)), None
        if method == "GET" and parts[:3] == ["v2", "payments", "captures"] and len(parts) == 4:
            capture = self.captures.get(parts[3])
            if capture is None:
                return self._not_found(), None
            return _json(200, capture), None
        return _json(404, {"name": "NOT_FOUND", "message": "no such endpoint"}), None

    @staticmethod
    def _not_found() -> Response:
        return _error(
            404,
            "RESOURCE_NOT_FOUND",
            "INVALID_RESOURCE_ID",
            "Specified resource ID does not exist. Please check the resource ID and try again.",
            "The specified resource does not exist.",
        )

    # -- vault ---------------------------------------------------------------------------

    def _vault(self, body: dict[str, Any]) -> tuple[Response, Any]:
        token = (body.get("payment_source") or {}).get("token") or {}
        setup = self.setup_tokens.pop(str(token.get("id")), None)
        if token.get("type") != "SETUP_TOKEN" or setup is None:
            response = self._not_found()
            return response, ("response", response)
        ident = uuid.uuid4().hex[:8]
        self.payment_tokens[ident] = {
            "id": ident,
            "customer": {"id": "customer_" + uuid.uuid4().hex[:10]},
            "payment_source": {
                "paypal": {
                    "email_address": setup["email_address"],
                    "payer_id": setup["payer_id"],
                    "name": {"given_name": "Fake", "surname": "Buyer"},
                    "usage_type": "MERCHANT",
                    "customer_type": "CONSUMER",
                }
            },
            "links": [
                {
                    "rel": "self",
                    "href": f"https://api-m.sandbox.paypal.com/v3/vault/payment-tokens/{ident}",
                    "method": "GET",
                }
            ],
        }
        return _json(201, self.payment_tokens[ident]), ("payment_token", ident)

    # -- orders and captures -------------------------------------------------------------

    def _create_order(self, body: dict[str, Any]) -> tuple[Response, Any]:
        unit = (body.get("purchase_units") or [{}])[0]
        amount = unit.get("amount") or {}
        value = str(amount.get("value"))
        invoice = unit.get("invoice_id")
        vault_id = ((body.get("payment_source") or {}).get("paypal") or {}).get("vault_id")
        if self.block_duplicate_invoice and invoice and self.captured(invoice):
            response = _error(
                422,
                "UNPROCESSABLE_ENTITY",
                "DUPLICATE_INVOICE_ID",
                "Duplicate Invoice ID detected. To avoid a potential duplicate transaction your "
                "account setting requires that Invoice Id be unique for each transaction.",
            )
            return response, ("response", response)
        order_id = f"{next(self._ids):05d}" + uuid.uuid4().hex[:12].upper()
        order: dict[str, Any] = {
            "id": order_id,
            "intent": body.get("intent"),
            "status": "CREATED",
            "unit": unit,
            "vault_id": vault_id,
            "create_time": _now(),
        }
        if vault_id is None:  # waits for a payer's approval that never comes here
            self.orders[order_id] = order
            return _json(201, self._order_view(order)), ("order", order_id)
        payment = self.payment_tokens.get(vault_id)
        if payment is None:
            response = self._not_found()
            return response, ("response", response)
        figure = Decimal(value)
        if figure == Decimal("2099.00"):
            order["status"] = "PAYER_ACTION_REQUIRED"
            self.orders[order_id] = order
            return _json(200, self._order_view(order)), ("order", order_id)
        if Decimal("2000") <= figure < Decimal("3000"):
            response = _error(
                422,
                "UNPROCESSABLE_ENTITY",
                "INSTRUMENT_DECLINED",
                "The instrument presented was either declined by the processor or bank, or it "
                "can't be used for this payment.",
            )
            return response, ("response", response)
        if Decimal("3000") <= figure < Decimal("3001"):
            response = _json(
                429,
                {
                    "name": "RATE_LIMIT_REACHED",
                    "message": "Too many requests. Blocked due to rate limiting.",
                    "debug_id": uuid.uuid4().hex[:13],
                },
            )
            return response, None  # nothing was done: a retry is a new request
        order["status"] = "APPROVED"
        self.orders[order_id] = order
        if not self.approve_only:
            self._complete(order)
        if value in self.error_amounts:  # done, but the answer is a server error
            return _error(500, "INTERNAL_SERVER_ERROR", "INTERNAL_SERVICE_ERROR", "fake"), (
                "order",
                order_id,
            )
        delay = self.hang_seconds if value in self.hang_amounts else 0.0
        return _json(201, self._order_view(order), delay=delay), ("order", order_id)

    def _complete(self, order: dict[str, Any]) -> None:
        unit = order["unit"]
        value = str(unit["amount"]["value"])
        capture_id = f"{next(self._ids):04d}" + uuid.uuid4().hex[:13].upper()
        capture: dict[str, Any] = {
            "id": capture_id,
            "status": "COMPLETED",
            "amount": dict(unit["amount"]),
            "final_capture": True,
            "seller_protection": {"status": "ELIGIBLE"},
            "invoice_id": unit.get("invoice_id"),
            "custom_id": unit.get("custom_id"),
            "create_time": _now(),
            "update_time": _now(),
            "refunded": "0",
            "links": [
                {
                    "rel": "self",
                    "href": f"https://api-m.sandbox.paypal.com/v2/payments/captures/{capture_id}",
                    "method": "GET",
                },
                {
                    "rel": "up",
                    "href": f"https://api-m.sandbox.paypal.com/v2/checkout/orders/{order['id']}",
                    "method": "GET",
                },
            ],
        }
        if value in self.pending_amounts:
            capture["status"] = "PENDING"
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        self.captures[capture_id] = capture
        order["capture_id"] = capture_id
        order["status"] = "COMPLETED"

    def _capture_order(self, order_id: str) -> tuple[Response, Any]:
        order = self.orders.get(order_id)
        if order is None:
            return self._not_found(), None
        if order["status"] != "APPROVED":
            issue = (
                "ORDER_ALREADY_CAPTURED" if order["status"] == "COMPLETED" else "ORDER_NOT_APPROVED"
            )
            response = _error(422, "UNPROCESSABLE_ENTITY", issue, f"order is {order['status']}")
            return response, ("response", response)
        self._complete(order)
        return _json(201, self._order_view(order)), ("order", order_id)

    def _order_view(self, order: dict[str, Any]) -> dict[str, Any]:
        unit: dict[str, Any] = {"reference_id": "default", "amount": order["unit"].get("amount")}
        for name in ("custom_id", "invoice_id", "description"):
            if order["unit"].get(name) is not None:
                unit[name] = order["unit"][name]
        if order.get("capture_id"):
            capture_id = order["capture_id"]
            unit["payments"] = {"captures": [self.captures[capture_id]]}
            refunds = [
                self.refunds[ident]
                for ident, refunded in self.refunded_capture.items()
                if refunded == capture_id
            ]
            if refunds:
                unit["payments"]["refunds"] = refunds
        base = "https://api-m.sandbox.paypal.com/v2/checkout/orders/" + order["id"]
        links = [{"href": base, "rel": "self", "method": "GET"}]
        if order["status"] == "CREATED":
            approve = "https://www.sandbox.paypal.com/checkoutnow?token=" + order["id"]
            links.append({"href": approve, "rel": "approve", "method": "GET"})
        if order["status"] == "PAYER_ACTION_REQUIRED":
            action = "https://www.sandbox.paypal.com/checkoutnow?token=" + order["id"]
            links.append({"href": action, "rel": "payer-action", "method": "GET"})
        view: dict[str, Any] = {
            "id": order["id"],
            "intent": order["intent"],
            "status": order["status"],
            "purchase_units": [unit],
            "create_time": order["create_time"],
            "links": links,
        }
        if order.get("vault_id"):
            payment = self.payment_tokens[order["vault_id"]]["payment_source"]["paypal"]
            view["payment_source"] = {
                "paypal": {
                    "email_address": payment["email_address"],
                    "account_id": payment["payer_id"],
                    "account_status": "VERIFIED",
                    "attributes": {"vault": {"id": order["vault_id"], "status": "VAULTED"}},
                }
            }
        return view

    # -- refunds -------------------------------------------------------------------------

    def _refund(self, capture_id: str, body: dict[str, Any]) -> tuple[Response, Any]:
        capture = self.captures.get(capture_id)
        if capture is None:
            return self._not_found(), None
        amount = (body.get("amount") or {}).get("value") or capture["amount"]["value"]
        total = Decimal(capture["amount"]["value"])
        refunded = Decimal(capture["refunded"])
        if capture["status"] == "REFUNDED":
            issue, text = "CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded"
        elif refunded + Decimal(amount) > total:
            issue, text = (
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or "
                "equal to the capture amount that has not yet been refunded.",
            )
        elif capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            issue, text = "CAPTURE_STATUS_NOT_VALID", f"capture is {capture['status']}"
        else:
            issue = text = ""
        if issue:
            response = _error(422, "UNPROCESSABLE_ENTITY", issue, text)
            return response, ("response", response)
        refunded += Decimal(amount)
        capture["refunded"] = str(refunded)
        capture["status"] = "REFUNDED" if refunded == total else "PARTIALLY_REFUNDED"
        ident = f"{next(self._ids):04d}" + uuid.uuid4().hex[:13].upper()
        self.refunds[ident] = {
            "id": ident,
            "status": "COMPLETED",
            "amount": {"currency_code": capture["amount"]["currency_code"], "value": amount},
            "invoice_id": body.get("invoice_id"),
            "create_time": _now(),
            "links": [
                {
                    "rel": "self",
                    "href": f"https://api-m.sandbox.paypal.com/v2/payments/refunds/{ident}",
                    "method": "GET",
                }
            ],
        }
        self.refunded_capture[ident] = capture_id
        delay = self.hang_seconds if amount in self.hang_amounts else 0.0
        return _json(201, self.refunds[ident], delay=delay), ("refund", ident)
