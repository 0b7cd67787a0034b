"""`export transactions` and `export activity`: an account's history as a file, streamed.

- transactions: every money movement of the account (its ledger transactions), oldest
  first, with the running balance the ledger recorded after each (`balance_after`).
- activity: everything that happened on the account, oldest first: the money movements
  and every event recorded for it (methods, settings, alerts, suspensions, invoices,
  numbers, charges: the outbox's `events` rows, worker/outbox/events.py). Events are
  kept for EVENTS_RETENTION_DAYS once published, so older activity shows money only.

Rows come through server-side cursors (`yield_per`): PostgreSQL sends them in batches, and
neither the rows nor the file are ever held whole, so a million rows take bounded memory
(bench/exports.py measures it). The file is written beside `out` under a temporary name and
linked to its name when complete: a refused or failed export leaves no file, half or whole,
and an export never replaces anything already at `out` (refused naming `out`).

When the account is shown in another currency (`display_currency`), every row also has the
display figures at that row's moment: the rate in force then (worker/fx: the latest at or
before, with its date, `rate_stale` past 7 days), display only.
"""

from __future__ import annotations

import errno
import heapq
import json
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.accounts import service as accounts
from worker.exports.writers import CsvWriter, Money, Value, Writer, XlsxWriter
from worker.fx import service as fx
from worker.kernel import clock
from worker.kernel.clock import isoformat
from worker.kernel.errors import ValidationError
from worker.kernel.redaction import redact
from worker.ledger.models import Account, LedgerTransaction
from worker.outbox.models import Event

KINDS = ("transactions", "activity")
FORMATS = ("xlsx", "csv")
BATCH = 2000  # rows per round trip of the server-side cursor
PROGRESS_EVERY = 5000
Progress = Callable[[int], None]

TRANSACTION_COLUMNS = [
    "date", "transaction_id", "type", "reference", "description", "amount", "balance",
    "currency",
]  # fmt: skip
ACTIVITY_COLUMNS = [
    "date", "what", "type", "id", "reference", "description", "amount", "balance", "currency",
    "details",
]  # fmt: skip
DISPLAY_COLUMNS = [
    "display_currency", "display_amount", "display_balance", "rate", "rate_date", "rate_stale",
]  # fmt: skip


def parse_day(value: object, field: str) -> date | None:
    """`YYYY-MM-DD` or None; anything else is refused naming `field`."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 10:
        raise ValidationError(field, f"must be a date YYYY-MM-DD, not {str(value)[:20]!r}")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, f"is not a date YYYY-MM-DD: {value!r}") from None
    # The bounds of every as_of (worker/kernel/clock): 9999-12-31 plus a day overflowed.
    if not clock.EARLIEST.date() <= day < clock.LATEST.date():
        raise ValidationError(
            field, f"must lie between {clock.EARLIEST.year} and {clock.LATEST.year}"
        )
    return day


def period(since: object, until: object) -> tuple[datetime | None, datetime | None]:
    """`--from D` and `--to D` (both included, UTC days) as [start, end) moments."""
    first, last = parse_day(since, "from"), parse_day(until, "to")
    if first and last and first > last:
        raise ValidationError("to", f"{last} is before from {first}")
    start = datetime.combine(first, time(), UTC) if first else None
    end = datetime.combine(last + timedelta(days=1), time(), UTC) if last else None
    return start, end


def choose_format(fmt: object, out: Path) -> str:
    """`--format`, or the file's suffix (`.xlsx` or `.csv`).

    Without `--format` another suffix is refused naming `format` (`t.txt` silently
    written as .xlsx surprised its reader); with it, a `.xlsx`/`.csv` suffix saying the
    other format is refused naming `out`. A suffix that names no format (`.txt`, none) is
    fine with `--format`."""
    suffix = out.suffix.lower().lstrip(".")
    if fmt is None:
        if suffix in FORMATS:
            return suffix
        raise ValidationError(
            "format", f"give --format xlsx or csv: the suffix {out.suffix[:20]!r} names neither"
        )
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise ValidationError("format", f"must be xlsx or csv, not {str(fmt)[:20]!r}")
    chosen = fmt.lower()
    if suffix in FORMATS and suffix != chosen:
        raise ValidationError("out", f"the suffix .{suffix} contradicts --format {chosen}")
    return chosen


def _between(column: Any, start: datetime | None, end: datetime | None) -> list[Any]:
    where = []
    if start is not None:
        where.append(column >= start)
    if end is not None:
        where.append(column < end)
    return where


def _transactions(
    session: Session, account_id: str, start: datetime | None, end: datetime | None
) -> Iterator[Any]:
    t = LedgerTransaction
    statement = (
        select(
            t.created_at,
            t.id,
            t.kind,
            t.reference,
            t.description,
            t.amount,
            t.balance_after,
            t.currency,
        )
        .where(t.account_id == account_id, *_between(t.created_at, start, end))
        .order_by(t.created_at, t.id)
        .execution_options(yield_per=BATCH)
    )
    yield from session.execute(statement)


def _events(
    session: Session, account_id: str, start: datetime | None, end: datetime | None
) -> Iterator[Any]:
    statement = (
        select(Event.occurred_at, Event.id, Event.type, Event.data)
        .where(Event.account_id == account_id, *_between(Event.occurred_at, start, end))
        .order_by(Event.occurred_at, Event.id)
        .execution_options(yield_per=BATCH)
    )
    yield from session.execute(statement)


def count(
    session: Session, kind: str, account_id: str, start: datetime | None, end: datetime | None
) -> int:
    """How many rows the export will have (for a progress bar's total)."""
    t = LedgerTransaction
    total = session.execute(
        select(func.count()).where(t.account_id == account_id, *_between(t.created_at, start, end))
    ).scalar_one()
    if kind == "activity":
        total += session.execute(
            select(func.count()).where(
                Event.account_id == account_id, *_between(Event.occurred_at, start, end)
            )
        ).scalar_one()
    return int(total)


class _Display:
    """The display columns of a row (empty list when the account shows its own currency)."""

    def __init__(self, session: Session, account: Account, end: datetime | None) -> None:
        self.currency = account.currency
        self.shown_in = account.display_currency
        self.active = self.shown_in != self.currency
        self.book = (
            fx.RateBook(session, self.currency, self.shown_in, end or clock.now())
            if self.active
            else None
        )

    def columns(
        self, moment: datetime, amount: Decimal | None, balance: Decimal | None
    ) -> list[Value]:
        if self.book is None:
            return []
        rate = self.book.at(moment)
        if rate is None:
            return [self.shown_in, None, None, None, None, None]

        def shown(value: Decimal | None) -> Money | None:
            if value is None:
                return None
            return Money(fx.convert(value, rate.rate, self.shown_in), self.shown_in)

        return [
            self.shown_in,
            shown(amount),
            shown(balance),
            rate.rate,
            rate.rate_date.isoformat() if rate.rate_date else None,
            rate.stale if rate.rate_date else None,
        ]


def _transaction_rows(
    session: Session,
    account: Account,
    start: datetime | None,
    end: datetime | None,
    display: _Display,
) -> Iterator[list[Value]]:
    for at, txn_id, kind, reference, description, amount, balance, currency in _transactions(
        session, account.id, start, end
    ):
        yield [
            isoformat(at), txn_id, kind, reference, description,
            Money(amount, currency), Money(balance, currency), currency,
            *display.columns(at, amount, balance),
        ]  # fmt: skip


def _activity_rows(
    session: Session,
    account: Account,
    start: datetime | None,
    end: datetime | None,
    display: _Display,
) -> Iterator[list[Value]]:
    money = (
        (at, txn_id, 0, (kind, reference, description, amount, balance, currency))
        for at, txn_id, kind, reference, description, amount, balance, currency in _transactions(
            session, account.id, start, end
        )
    )
    events = (
        (at, event_id, 1, (type_, data))
        for at, event_id, type_, data in _events(session, account.id, start, end)
    )
    # Both streams come sorted by (moment, id): merged, the file is one timeline.
    for at, row_id, source, fields in heapq.merge(money, events, key=lambda r: (r[0], r[1])):
        if source == 0:
            kind, reference, description, amount, balance, currency = fields
            yield [
                isoformat(at), "money", kind, row_id, reference, description,
                Money(amount, currency), Money(balance, currency), currency, None,
                *display.columns(at, amount, balance),
            ]  # fmt: skip
        else:
            type_, data = fields
            details = redact(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str))
            yield [
                isoformat(at), "event", type_, row_id, None, None, None, None, None, details,
                *display.columns(at, None, None),
            ]  # fmt: skip


def _new_target(out: Path) -> Path:
    """`out` as an absolute path to a file that does not exist yet, in an existing folder.

    Anything already there is refused naming `out`, whatever it is (a file, the live
    database, a device, a FIFO, a folder, a symlink, even a dangling one): an export never
    replaces or writes through it; the operator removes it or picks another name."""
    given = out.expanduser()
    if not given.name or given.name in (".", ".."):
        raise ValidationError("out", f"{str(out)[:200]} names no file")
    parent = given.parent.resolve()
    if not parent.is_dir():
        raise ValidationError("out", f"no folder {str(parent)[:200]}")
    target = parent / given.name
    if os.path.lexists(target):
        raise ValidationError(
            "out", f"{str(target)[:200]} already exists: remove it or choose another name"
        )
    return target


def _temp_file(target: Path) -> Path:
    """A new empty file beside `target` (same folder, so publishing it is one link).

    Created with mode 0666 for the kernel to apply the umask: the export gets the mode
    of any new file (0644 under the usual umask), not mkstemp's 0600."""
    for _ in range(100):
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ValidationError(
                "out", f"cannot write in {str(target.parent)[:200]}: {exc.strerror or exc}"
            ) from None
        os.close(fd)
        return temp
    raise ValidationError("out", f"cannot create a temporary file in {str(target.parent)[:200]}")


def _publish(temp: Path, target: Path) -> None:
    """Give the complete file its name, never replacing what appeared there meanwhile:
    a hard link fails if the name is taken (os.replace would overwrite it)."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise ValidationError(
            "out", f"{str(target)[:200]} already exists: remove it or choose another name"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise ValidationError(
                "out", f"cannot write {str(target)[:200]}: {exc.strerror or exc}"
            ) from None
        # A file system without hard links: check again and rename (a narrow race only).
        if os.path.lexists(target):
            raise ValidationError(
                "out", f"{str(target)[:200]} already exists: remove it or choose another name"
            ) from None
        os.replace(temp, target)


def _write(writer: Writer, rows: Iterator[list[Value]], progress: Progress | None) -> int:
    written = 0
    for row in rows:
        writer.row(row)
        written += 1
        if progress is not None and written % PROGRESS_EVERY == 0:
            progress(written)
    writer.close()
    return written


def export(
    session: Session,
    *,
    kind: str,
    account_id: object,
    out: Path,
    fmt: object = None,
    since: object = None,
    until: object = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the account's `kind` (`transactions` or `activity`) to `out`.

    `fmt`: `xlsx` or `csv` (default from `out`'s suffix); `since`/`until`: `YYYY-MM-DD`,
    both days included (UTC); `progress(rows_done)` is called every PROGRESS_EVERY rows.
    Returns `{path, rows, format, kind, account_id}` (rows: data rows, header excluded).
    Raises ValidationError naming `kind`, `format`, `from`, `to` or `out` (`out` exists,
    its folder does not, the suffix contradicts `fmt`, or writing failed: ENOSPC, EIO),
    NotFound for `account_id`; then no file is written."""
    if kind not in KINDS:
        raise ValidationError("kind", f"must be transactions or activity, not {kind[:20]!r}")
    chosen = choose_format(fmt, out)
    start, end = period(since, until)
    account = accounts.get(session, account_id)
    target = _new_target(out)
    display = _Display(session, account, end)
    header = list(TRANSACTION_COLUMNS if kind == "transactions" else ACTIVITY_COLUMNS)
    if display.active:
        header += DISPLAY_COLUMNS
    rows = (_transaction_rows if kind == "transactions" else _activity_rows)(
        session, account, start, end, display
    )
    temp = _temp_file(target)
    try:
        try:
            if chosen == "csv":
                with temp.open("w", encoding="utf-8", newline="") as stream:
                    written = _write(CsvWriter(stream, header), rows, progress)
            else:
                # write-only: sheets stream to temporary files, zipped by close()
                written = _write(XlsxWriter(temp, kind, header), rows, progress)
        except OSError as exc:  # ENOSPC, EIO...: a refusal naming the file, no traceback
            raise ValidationError(
                "out", f"cannot write {str(target)[:200]}: {exc.strerror or exc}"
            ) from None
        _publish(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    if progress is not None:
        progress(written)
    return {
        "path": str(target),
        "rows": written,
        "format": chosen,
        "kind": kind,
        "account_id": account.id,
    }
