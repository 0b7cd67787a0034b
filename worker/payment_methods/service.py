"""Payment methods: PSP tokens only. One card or PayPal account belongs to one account."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.accounts import service as accounts
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.kernel import validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import NotFound, PaymentMethodInUse, PaymentMethodRefused, ValidationError
from worker.kernel.validation import refuse_pan
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events
from worker.payment_methods.models import PaymentMethod
from worker.psp.base import VaultRequest
from worker.psp.errors import VaultRefused
from worker.psp.registry import get_adapter

IN_USE = "this card or PayPal account is already saved on another account (one account only)"


def view(method: PaymentMethod) -> dict[str, Any]:
    return {
        "id": method.id,
        "account_id": method.account_id,
        "type": method.type,
        "psp": method.psp,
        "display": method.display,
        "brand": method.brand,
        "last4": method.last4,
        "expiry": method.expiry,
        "payer_email": method.payer_email,
        "default": method.is_default,
        "created_at": isoformat(method.created_at),
    }


def _active(session: Session, account_id: str) -> list[PaymentMethod]:
    return list(
        session.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.account_id == account_id, PaymentMethod.removed_at.is_(None))
            .order_by(PaymentMethod.created_at, PaymentMethod.id)
        )
    )


def add(
    uow: UnitOfWork,
    *,
    account_id: object,
    psp: object,
    nonce: object = None,
    make_default: bool = False,
    now: datetime,
) -> dict[str, Any]:
    """Vault a nonce at the PSP and save the token. Nothing is written on refusal."""
    if not isinstance(psp, str) or not psp.strip():
        raise ValidationError("psp", "is required (braintree, paypal or bank_transfer)")
    adapter = get_adapter(validation.refuse_control(psp, "psp").strip())
    if adapter.on_demand:
        if not isinstance(nonce, str) or not nonce.strip():
            raise ValidationError("nonce", f"is required for {adapter.name}")
        if len(nonce) > 200:
            raise ValidationError("nonce", "is longer than 200 characters")
        validation.refuse_control(nonce, "nonce")
        refuse_pan(nonce, "nonce")
    elif nonce is not None:
        refuse_pan(validation.refuse_control(str(nonce), "nonce"), "nonce")
    if uow.session.new or uow.session.dirty or uow.session.deleted:
        raise RuntimeError("payment_methods.add must start its unit of work")
    known = accounts.get(uow.session, account_id)
    uow.session.rollback()  # nothing written yet: hold no transaction or lock during vault
    try:
        vaulted = adapter.vault(VaultRequest(nonce=str(nonce or ""), customer_ref=known.id))
    except VaultRefused as exc:
        raise PaymentMethodRefused("nonce", f"{adapter.name} refused it: {exc}") from None
    account = ledger.lock_account(uow.session, known.id)

    if vaulted.fingerprint is not None:
        holder = uow.session.scalars(
            select(PaymentMethod).where(
                PaymentMethod.fingerprint == vaulted.fingerprint, PaymentMethod.removed_at.is_(None)
            )
        ).one_or_none()
        if holder is not None and holder.account_id == account.id:
            if make_default and not holder.is_default:  # the same card again, now as default
                for other in _active(uow.session, account.id):
                    other.is_default = False
                uow.session.flush()
                holder.is_default = True
            return view(holder)
        if holder is not None:
            raise PaymentMethodInUse("nonce", IN_USE)

    current = _active(uow.session, account.id)
    is_default = make_default or not any(m.is_default for m in current)
    if is_default:
        for other in current:
            other.is_default = False
        uow.session.flush()
    method = PaymentMethod(
        id=new_id("pm"),
        account_id=account.id,
        psp=adapter.name,
        type=vaulted.type,
        token=vaulted.token,
        fingerprint=vaulted.fingerprint,
        display=vaulted.display,
        brand=vaulted.brand,
        last4=vaulted.last4,
        expiry=vaulted.expiry,
        payer_email=vaulted.payer_email,
        is_default=is_default,
        created_at=now,
        removed_at=None,
    )
    try:
        with uow.session.begin_nested():
            uow.session.add(method)
    except IntegrityError:  # another account saved the same card a moment ago
        raise PaymentMethodInUse("nonce", IN_USE) from None
    events.record(
        uow,
        "payment_method.added",
        account.id,
        {
            "payment_method_id": method.id,
            "type": method.type,
            "psp": method.psp,
            "display": method.display,
        },
        now,
    )
    return view(method)


def list_for(session: Session, account_id: str) -> list[dict[str, Any]]:
    account_id = validation.identifier(account_id, "account_id")
    if session.get(Account, account_id) is None:
        raise NotFound("account_id", f"no account {account_id[:60]!r}")
    return [view(m) for m in _active(session, account_id)]


def get_active(session: Session, account_id: str, method_id: object, field: str) -> PaymentMethod:
    method_id = validation.identifier(method_id, field)
    method = session.get(PaymentMethod, method_id)
    if method is None or method.account_id != account_id or method.removed_at is not None:
        raise NotFound(field, f"no payment method {method_id[:60]!r} on this account")
    return method


def default_for(session: Session, account_id: str) -> PaymentMethod | None:
    return session.scalars(
        select(PaymentMethod).where(
            PaymentMethod.account_id == account_id,
            PaymentMethod.is_default.is_(True),
            PaymentMethod.removed_at.is_(None),
        )
    ).one_or_none()


def remove(
    uow: UnitOfWork, *, account_id: object, method_id: object, now: datetime
) -> dict[str, Any]:
    """Forget a method. If auto-reload used it, auto-reload turns off (with an event)."""
    account = ledger.lock_account(uow.session, account_id)
    method = get_active(uow.session, account.id, method_id, "payment_method_id")
    method.removed_at = now
    was_default, method.is_default = method.is_default, False
    uow.session.flush()
    if was_default:
        rest = _active(uow.session, account.id)
        if rest:
            rest[-1].is_default = True
    if account.auto_reload_method_id == method.id:
        account.auto_reload_enabled = False
        account.auto_reload_method_id = None
        account.updated_at = now
        events.record(
            uow,
            "auto_reload.disabled",
            account.id,
            {"reason": "payment_method_removed", "payment_method_id": method.id},
            now,
        )
    events.record(uow, "payment_method.removed", account.id, {"payment_method_id": method.id}, now)
    return {**view(method), "removed": True}
