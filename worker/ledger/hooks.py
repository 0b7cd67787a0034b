"""Balance-change hooks: how packages above the ledger react to a credit or a depletion.

The ledger sits below the domains that care about its balance changes (virtual numbers:
a credit retries unpaid fees and restores suspended numbers; a depletion suspends them),
so they hand it hooks instead of being imported by it, as the charge engine's outcome hooks
(worker/charges/engine.py). `worker/wiring.py` installs them. Hooks run inside `ledger.post`,
in the transaction of the balance change, with the account row locked: what they write is
committed with the change or not at all, and what they enqueue is sent after that commit.

A hook must be cheap for an account it has nothing to do with (the debit path is the hot
path: a depletion hook runs only when a debit depletes, a credit hook on every credit), and
must not post to the ledger itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.db.session import UnitOfWork
    from worker.ledger.models import Account, LedgerTransaction

# (uow, the locked account after the change, the transaction, now) -> None
CreditHook = Callable[["UnitOfWork", "Account", "LedgerTransaction", datetime], None]
# Same arguments; returns extra fields for the depletion mail (e.g. when numbers will be
# cancelled), merged in the order the hooks were installed.
DepletionHook = Callable[
    ["UnitOfWork", "Account", "LedgerTransaction", datetime], Mapping[str, Any] | None
]

# (uow, the locked account, now) -> None: an operator's `accounts resume` left the account
# active (worker/accounts/admin.py); no money moved, so no transaction.
ResumeHook = Callable[["UnitOfWork", "Account", datetime], None]

_credit_hooks: dict[str, CreditHook] = {}
_depletion_hooks: dict[str, DepletionHook] = {}
_resume_hooks: dict[str, ResumeHook] = {}


def install_credit_hook(name: str, hook: CreditHook) -> None:
    """Register (or replace) `hook`, run after every credit (amount > 0), once the depletion
    rule has re-activated the account if the credit lifted it above the floor."""
    _credit_hooks[name] = hook


def install_depletion_hook(name: str, hook: DepletionHook) -> None:
    """Register (or replace) `hook`, run when a debit suspends the account as depleted,
    before the depletion mail is queued (its returned fields go into that mail)."""
    _depletion_hooks[name] = hook


def install_resume_hook(name: str, hook: ResumeHook) -> None:
    """Register (or replace) `hook`, run when an operator's resume leaves the account
    active: what a credit would have restored while the operator's suspension held it
    (numbers suspended by a depletion) is restored now (issue 18)."""
    _resume_hooks[name] = hook


def after_resume(uow: UnitOfWork, account: Account, now: datetime) -> None:
    for hook in _resume_hooks.values():
        hook(uow, account, now)


def after_credit(uow: UnitOfWork, account: Account, txn: LedgerTransaction, now: datetime) -> None:
    for hook in _credit_hooks.values():
        hook(uow, account, txn, now)


def after_depletion(
    uow: UnitOfWork, account: Account, txn: LedgerTransaction, now: datetime
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for hook in _depletion_hooks.values():
        fields.update(hook(uow, account, txn, now) or {})
    return fields


def installed() -> tuple[list[str], list[str]]:
    """Names of the installed credit and depletion hooks (for tests and start-up checks)."""
    return list(_credit_hooks), list(_depletion_hooks)
