"""Payment methods: PSP tokens only. One card or PayPal account belongs to one account.

The default method is what a top-up (or auto-reload) without a method charges, so only a
method that can be charged on demand (a card or PayPal account: its adapter's `on_demand`)
is ever the default. A bank transfer is never made the default, neither by itself (first
method added, the default removed) nor on request: it is always named explicitly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.accounts import service as accounts
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.kernel import task_names, validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import NotFound, PaymentMethodInUse, PaymentMethodRefused, ValidationError
from worker.kernel.validation import refuse_pan
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events
from worker.payment_methods.models import MethodType, PaymentMethod
from worker.psp.base import VaultRequest
from worker.psp.errors import VaultRefused
from worker.psp.registry import ADAPTERS, get_adapter

IN_USE = "this card or PayPal account is already saved on another account (one account only)"
NOT_ON_DEMAND = (
    "a bank transfer cannot be the default: only a card or PayPal account can be charged on "
    "demand (name a bank transfer with --method / payment_method_id when you top up)"
)
NOT_ON_DEMAND_WECHAT = (
    "WeChat Pay cannot be the default: each payment is a QR code the payer scans, so only a "
    "card or PayPal account can be charged on demand (name it with --method when you top up)"
)


def _not_on_demand(psp: str) -> str:
    return NOT_ON_DEMAND_WECHAT if psp == "wechat_pay" else NOT_ON_DEMAND


def on_demand(method: PaymentMethod) -> bool:
    """True for a method we can charge when we choose (card, PayPal): the adapter says so.

    Judged from the adapter's class, not whether its PSP is enabled right now: a card whose
    PSP is switched off is still a card (charging it is refused by name, never silently
    turned into something else)."""
    if method.type == MethodType.BANK_TRANSFER:
        return False
    return bool(getattr(ADAPTERS.get(method.psp), "on_demand", False))


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
    """Vault a nonce at the PSP and save the token; prints it (`view`).

    The first card or PayPal account of an account becomes its default; a bank transfer or
    WeChat Pay never does by itself, and `make_default` on one is refused (field `default`).
    WeChat Pay only for an account whose country is in the adapter's `allowed_countries`
    (field `country`). A new default resumes an auto-reload paused for 3-D Secure.
    Raises ValidationError, NotFound, PaymentMethodRefused, PaymentMethodInUse; nothing is
    written on refusal."""
    if not isinstance(psp, str) or not psp.strip():
        raise ValidationError("psp", "is required (braintree, paypal, bank_transfer or wechat_pay)")
    adapter = get_adapter(validation.refuse_control(psp, "psp").strip())
    if make_default and not adapter.on_demand:
        raise ValidationError("default", _not_on_demand(adapter.name))
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
    allowed = getattr(adapter, "allowed_countries", None)
    if allowed is not None and known.country not in allowed:
        # Seeds 000/001 (Nexmo's payment page): WeChat Pay only for AU, CN, HK, ID, MY, NZ,
        # PH and TW. Refused before the PSP is asked; nothing is written.
        raise ValidationError(
            "country",
            f"{adapter.name} is only available for accounts in {', '.join(sorted(allowed))}; "
            f"this account's country is {known.country}",
        )
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
            if make_default and account.auto_reload_action_required_at is not None:
                # The same card entered afresh and authenticated (3-D Secure): the new vault
                # token is the one the cardholder confirmed, so reloads charge that one.
                holder.token = vaulted.token
                _resume_auto_reload(uow, account, holder, now)
            return view(holder)
        if holder is not None:
            raise PaymentMethodInUse("nonce", IN_USE)

    current = _active(uow.session, account.id)
    # A default left on a bank transfer by an older version counts as none.
    is_default = make_default or (
        adapter.on_demand and not any(m.is_default and on_demand(m) for m in current)
    )
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
    if is_default:
        _resume_auto_reload(uow, account, method, now)
    return view(method)


def _resume_auto_reload(
    uow: UnitOfWork, account: Account, method: PaymentMethod, now: datetime
) -> None:
    """Issue 17: an auto-reload paused because a reload needed the cardholder (3-D Secure,
    `auto_reload_action_required_at`) resumes when the customer adds a new default method
    (`methods add ... --default`, a fresh nonce): it reloads with that method from now on,
    `auto_reload.resumed` is written, and a reload is asked for at once when the balance is
    below the threshold (as `auto-reload set` does). Anything else: nothing changes.
    `account` is locked by the caller."""
    if account.auto_reload_action_required_at is None or not on_demand(method):
        return
    account.auto_reload_action_required_at = None
    account.updated_at = now
    if not account.auto_reload_enabled:  # turned off meanwhile: nothing to resume
        return
    previous = account.auto_reload_method_id
    account.auto_reload_method_id = method.id
    events.record(
        uow,
        "auto_reload.resumed",
        account.id,
        {
            "reason": "new_default_method",
            "payment_method_id": method.id,
            "previous_payment_method_id": previous,
        },
        now,
    )
    threshold = account.auto_reload_threshold
    if threshold is not None and account.balance < threshold:
        uow.enqueue(task_names.AUTO_RELOAD_RELOAD_NOW, account.id)


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
    """The account's default method, or None. A bank transfer marked default (by a version
    before this rule) is not one: a top-up without a method must never quietly become a
    pending bank-transfer charge."""
    method = session.scalars(
        select(PaymentMethod).where(
            PaymentMethod.account_id == account_id,
            PaymentMethod.is_default.is_(True),
            PaymentMethod.removed_at.is_(None),
        )
    ).one_or_none()
    return method if method is not None and on_demand(method) else None


def set_default(
    uow: UnitOfWork, *, account_id: object, method_id: object, now: datetime
) -> dict[str, Any]:
    """Make a card or PayPal method the account's default (`balancectl methods set-default`).

    Returns the method (`view`). A method that is already the default changes nothing; a new
    default resumes an auto-reload paused for 3-D Secure (`_resume_auto_reload`).
    Raises NotFound (`account_id`, `payment_method_id`), ValidationError
    (`payment_method_id`: a bank transfer, or a method whose PSP is not enabled)."""
    account = ledger.lock_account(uow.session, account_id)
    method = get_active(uow.session, account.id, method_id, "payment_method_id")
    if not on_demand(method):
        raise ValidationError("payment_method_id", _not_on_demand(method.psp))
    get_adapter(method.psp, "payment_method_id")  # still enabled?
    if method.is_default:
        return view(method)
    previous = [m for m in _active(uow.session, account.id) if m.is_default]
    for other in previous:
        other.is_default = False
    uow.session.flush()  # one default per account: the unique index sees the old one go first
    method.is_default = True
    events.record(
        uow,
        "payment_method.default_changed",
        account.id,
        {
            "payment_method_id": method.id,
            "previous_payment_method_id": previous[0].id if previous else None,
            "reason": "operator",
        },
        now,
    )
    _resume_auto_reload(uow, account, method, now)
    return view(method)


def remove(
    uow: UnitOfWork, *, account_id: object, method_id: object, now: datetime
) -> dict[str, Any]:
    """Forget a method; returns it with `removed: true`, `auto_reload_disabled` (bool: auto-
    reload used it and is now off, with an `auto_reload.disabled` event) and
    `default_payment_method_id` (the account's default afterwards, or null).

    Removing the default promotes the newest remaining card or PayPal account; with none,
    the account has no default (a bank transfer is never promoted), and a top-up must name
    its method. Raises NotFound / ValidationError (`account_id`, `payment_method_id`)."""
    account = ledger.lock_account(uow.session, account_id)
    method = get_active(uow.session, account.id, method_id, "payment_method_id")
    method.removed_at = now
    was_default, method.is_default = method.is_default, False
    uow.session.flush()
    promoted: PaymentMethod | None = None
    if was_default:
        chargeable = [m for m in _active(uow.session, account.id) if on_demand(m)]
        if chargeable:
            promoted = chargeable[-1]
            promoted.is_default = True
            events.record(
                uow,
                "payment_method.default_changed",
                account.id,
                {
                    "payment_method_id": promoted.id,
                    "previous_payment_method_id": method.id,
                    "reason": "default_removed",
                },
                now,
            )
    auto_reload_disabled = False
    if account.auto_reload_method_id == method.id:
        # Only an auto-reload that was on is turned off (and said so); one already off just
        # forgets the method.
        auto_reload_disabled = account.auto_reload_enabled
        account.auto_reload_enabled = False
        account.auto_reload_method_id = None
        account.updated_at = now
        if auto_reload_disabled:
            events.record(
                uow,
                "auto_reload.disabled",
                account.id,
                {"reason": "payment_method_removed", "payment_method_id": method.id},
                now,
            )
    events.record(uow, "payment_method.removed", account.id, {"payment_method_id": method.id}, now)
    current = promoted if promoted is not None else default_for(uow.session, account.id)
    return {
        **view(method),
        "removed": True,
        "auto_reload_disabled": auto_reload_disabled,
        "default_payment_method_id": current.id if current is not None else None,
    }
