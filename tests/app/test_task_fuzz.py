"""Every task, any arguments: a result or a refusal naming a field, never a crash (issue 11).

The tasks are found in the Celery app (every `balance.*` task, public and internal), so a
task added later is fuzzed without anyone remembering to. Each is called in-process the way
the other integration tests call tasks (`task(*args)`: the real task class, its unit of
work, real PostgreSQL), with arguments a JSON message can carry: text with control
characters, unpaired surrogates and non-ASCII digits, numbers, lists, objects, and near-miss
forms of real values (an existing account id with a NUL glued on, an amount with a newline).

Anything but a returned dict or a `DomainError` naming a field fails the test: a psycopg
`DataError`, a `TypeError`, an `OverflowError` are the crashes this test exists to catch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from celery.exceptions import Retry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import DomainError
from worker.ledger import adjustments
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

# The task names CONTRACT.md publishes; the fuzz must cover at least these.
CONTRACT_TASKS = {
    "balance.usage.debit",
    "balance.ledger.adjust",
    "balance.payments.top_up",
    "balance.auto_reload.sweep",
    "balance.alerts.scan",
    "balance.settlement.roll_forward",
    "balance.payments.sync_pending",
}

# Characters that broke or could break something: NUL (PostgreSQL refuses it in text), other
# C0 and C1 controls, DEL, unpaired surrogates (not encodable as UTF-8), line and paragraph
# separators, a byte-order mark, non-ASCII digits (Python's \d matches them), white space.
NASTY = [
    "\x00", "\x01", "\x08", "\t", "\n", "\x0b", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
    "\ud800", "\udfff", "\u2028", "\u2029", "\ufeff", "\u00a0", "\u0665", "\uff15", " ",
]  # fmt: skip

nasty_text = st.text(
    st.one_of(
        st.sampled_from(NASTY),
        # Every code point, surrogates included (hypothesis leaves them out by default).
        st.characters(exclude_categories=[]),
    ),
    max_size=30,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=3)
    ),
    max_leaves=8,
)


def _decorated(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A real value as sent, or with nasty characters glued before, after or inside it."""
    return st.one_of(
        base,
        base,
        base,
        st.builds(lambda v, c: v + c, base, st.sampled_from(NASTY)),
        st.builds(lambda v, c: c + v, base, st.sampled_from(NASTY)),
        st.builds(
            lambda v, c, i: v[:i] + c + v[i:], base, st.sampled_from(NASTY), st.integers(0, 8)
        ),
    )


amounts = st.one_of(
    st.sampled_from(["1", "0.01", "2.5", "-1", "0", "10.000001", "99999999999999.999999"]),
    st.decimals(min_value=-(10**15), max_value=10**15, allow_nan=False, places=6).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
# Moments at datetime's own limits: a job that adds a month or converts to UTC overflows.
EDGES_OF_TIME = [
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59+00:00",
    "9999-12-31T23:59:59-01:00",
]
timestamps = st.one_of(
    st.sampled_from(EDGES_OF_TIME),
    st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        offsets,
    ),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)).map(
        lambda d: d.replace(tzinfo=UTC).isoformat()
    ),
    st.datetimes().map(lambda d: d.isoformat()),  # naive: refused
)


def strategies(world: dict[str, str]) -> dict[str, st.SearchStrategy[Any]]:
    """Plausible values per argument name, each mixed with anything a message can carry."""
    ids = st.sampled_from([world["account_id"], world["poor_account_id"], "acc_missing"])
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "account_id": _decorated(ids),
        "account_ids": st.lists(_decorated(ids), max_size=4),
        "amount": _decorated(amounts),
        "reference": _decorated(st.sampled_from(["r-1", "r-2", "msg-9"])),
        "idempotency_key": _decorated(st.sampled_from(["k-1", "k-2"])),
        "payment_method_id": _decorated(st.sampled_from([world["method_id"], "pm_missing"])),
        "description": _decorated(st.sampled_from(["SMS to 44", "call"])),
        "reason": _decorated(st.sampled_from(["goodwill", "correction"])),
        "as_of": _decorated(timestamps),
    }
    # debit_many (issue 16): lists of plausible debits, some with odd members.
    plausible["debits"] = st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "account_id": plausible["account_id"],
                    "amount": plausible["amount"],
                    "reference": plausible["reference"],
                },
                optional={"description": plausible["description"]},
            ),
            json_values,
        ),
        max_size=6,
    )
    # Mostly plausible values (so the deeper paths run), the rest anything at all.
    return {name: st.one_of(s, s, s, json_values) for name, s in plausible.items()}


def _world() -> dict[str, str]:
    """An account with money and a card, and one with neither: real paths get exercised."""
    stamp = now()
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(uow, name="Fuzz", emails=["ops@example.com"], now=stamp)["id"]
        )
        poor = str(accounts.create(uow, name="Poor", now=stamp)["id"])
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="1000", reason="funds", now=stamp)
    with unit_of_work() as uow:
        method = payment_methods.add(
            uow, account_id=account_id, psp="braintree", nonce="fake-valid-visa-nonce", now=stamp
        )
    return {"account_id": account_id, "poor_account_id": poor, "method_id": str(method["id"])}


def _tasks() -> dict[str, Any]:
    from worker.celery import app

    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if name.startswith("balance.")}


def _call_strategy(
    task: Any, by_name: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[tuple[list[Any], dict[str, Any]]]:
    """Positional and keyword arguments for `task`; optional ones sometimes left out."""
    params = list(inspect.signature(task.run).parameters.values())

    @st.composite
    def call(draw: Callable[..., Any]) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        as_keywords = False
        for p in params:
            optional = p.default is not inspect.Parameter.empty
            if optional and draw(st.booleans()):
                as_keywords = True  # a later argument must then go by name
                continue
            value = draw(by_name.get(p.name, json_values))
            if as_keywords or draw(st.booleans()):
                kwargs[p.name] = value
                as_keywords = True
            else:
                args.append(value)
        return args, kwargs

    return call()


def _outcome(task: Any, args: list[Any], kwargs: dict[str, Any]) -> str:
    try:
        result = task(*args, **kwargs)
    except DomainError as exc:
        assert isinstance(exc.field, str) and exc.field, (task.name, args, kwargs, exc)
        assert str(exc).startswith(f"{exc.field}: ")
        return "refused"
    except Retry:  # a soft PSP failure asks Celery to run the task again: a normal outcome
        return "retry"
    assert isinstance(result, dict), (task.name, args, kwargs, result)
    return "ok"


def test_the_fuzz_covers_every_task_in_the_contract() -> None:
    assert set(_tasks()) >= CONTRACT_TASKS


@pytest.mark.parametrize("name", sorted(_tasks()))
def test_any_arguments_give_a_result_or_a_named_refusal(name: str) -> None:
    task = _tasks()[name]
    by_name = strategies(_world())
    seen: dict[str, int] = {}

    @settings(
        max_examples=80,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_call_strategy(task, by_name))
    def check(call: tuple[list[Any], dict[str, Any]]) -> None:
        outcome = _outcome(task, *call)
        seen[outcome] = seen.get(outcome, 0) + 1

    check()
    assert sum(seen.values()) > 0


@pytest.mark.parametrize(
    "name", sorted(n for n, t in _tasks().items() if "as_of" in inspect.signature(t.run).parameters)
)
@pytest.mark.parametrize("as_of", EDGES_OF_TIME)
def test_as_of_at_the_ends_of_time_is_refused_by_name(name: str, as_of: str) -> None:
    task = _tasks()[name]
    filler = {"account_id": "acc_missing", "account_ids": ["acc_missing"]}
    others = {
        p.name: filler[p.name]
        for p in inspect.signature(task.run).parameters.values()
        if p.name != "as_of" and p.default is inspect.Parameter.empty
    }
    with pytest.raises(DomainError) as info:
        task(**others, as_of=as_of)
    assert info.value.field == "as_of"
