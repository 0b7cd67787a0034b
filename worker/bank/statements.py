"""Bank statements: ISO 20022 camt.053 (BankToCustomerStatement) XML and a simple CSV.

Each credit entry is one incoming transfer, received by worker/bank/service.py exactly as
one sent by the task would be: the same statement imported twice, or two imports at once,
move money once (the bank reference is unique; a second importer waits on the first's
row, then finds it). Debit entries (money out: negative amounts, `DBIT`) are counted as
`skipped`, never credited. A bad entry is reported as `{line, field, message}` while the
good ones go in; a chunk of BATCH entries is one transaction, received in bulk
(worker/bank/bulk.py), applied wholly or not at all.

camt.053 is parsed with lxml with entities, DTDs and network access off (and a DOCTYPE
refused), streaming (`iterparse`): a statement of 100,000 entries never sits in memory.
Per entry (camt.053.001.02-.08): `Amt` + `@Ccy`, `CdtDbtInd`, `Sts` (booked only),
`BookgDt`, `ValDt`, the bank's reference `AcctSvcrRef` (entry, else its transaction
details), else `NtryRef`, else `EndToEndId`; the memo is the structured creditor
references (`Strd/CdtrRefInf/Ref`) and the unstructured remittance lines (`Ustrd`).

CSV (CONTRACT.md, and the README's `bank import` section): a header row and the columns
`bank_reference, booking_date, value_date, amount, currency, memo`; UTF-8 (a BOM is fine),
dates YYYY-MM-DD, amounts decimal strings with a dot.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from lxml import etree
from sqlalchemy.exc import OperationalError

from worker.bank import bulk
from worker.bank import service as bank
from worker.db.session import UnitOfWork
from worker.kernel import clock
from worker.kernel.errors import DomainError, ValidationError

log = logging.getLogger(__name__)

CSV_COLUMNS = ("bank_reference", "booking_date", "value_date", "amount", "currency", "memo")
BATCH = 1000  # entries per transaction (a chunk, received in bulk: worker/bank/bulk.py)
FORMATS = ("camt053", "csv")


@dataclass(frozen=True)
class Entry:
    """One statement line: `fields` for `bank.check`, or `error`; `debit` is skipped."""

    line: int
    fields: dict[str, Any] | None = None
    debit: bool = False
    error: dict[str, Any] | None = None


def _error(line: int, field: str, message: str) -> Entry:
    return Entry(line=line, error={"line": line, "field": field, "message": message})


# --- CSV ---------------------------------------------------------------------------------------


def parse_csv(stream: IO[str]) -> Iterator[Entry]:
    """Entries of a CSV statement; line numbers count the header as line 1."""
    reader = csv.DictReader(stream)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValidationError("file", f"CSV header lacks column(s): {', '.join(missing)}")
    reader.fieldnames = header
    for row in reader:
        line = reader.line_num
        if None in row:  # more cells than columns
            yield _error(line, "line", "more cells than the header has columns")
            continue
        amount = (row.get("amount") or "").strip()
        if amount.startswith("-"):
            yield Entry(line=line, debit=True)
            continue
        yield Entry(
            line=line,
            fields={
                "amount": amount,
                "currency": (row.get("currency") or "").strip(),
                "bank_reference": (row.get("bank_reference") or "").strip(),
                "memo": row.get("memo") or None,
                "value_date": (row.get("value_date") or "").strip() or None,
                "booking_date": (row.get("booking_date") or "").strip() or None,
            },
        )


# --- camt.053 ----------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _find(element: Any, *path: str) -> Any:
    """The first descendant along `path` (local names: camt versions differ in namespace)."""
    current = [element]
    for name in path:
        current = [child for node in current for child in node if _local(child.tag) == name]
        if not current:
            return None
    return current[0]


def _text(element: Any, *path: str) -> str | None:
    found = _find(element, *path)
    if found is None or found.text is None:
        return None
    return str(found.text).strip() or None


def _all(element: Any, name: str) -> list[Any]:
    return [node for node in element.iter() if _local(node.tag) == name]


def _date_of(element: Any, name: str) -> str | None:
    return _text(element, name, "Dt") or (_text(element, name, "DtTm") or "")[:10] or None


def _camt_entry(entry: Any) -> Entry:
    line = int(entry.sourceline or 0)
    status = _text(entry, "Sts", "Cd") or _text(entry, "Sts")
    indicator = _text(entry, "CdtDbtInd")
    if indicator == "DBIT":
        return Entry(line=line, debit=True)
    if indicator != "CRDT":
        return _error(line, "CdtDbtInd", f"must be CRDT or DBIT, not {indicator!r}")
    if status is not None and status != "BOOK":
        return _error(line, "Sts", f"only booked entries are money in (got {status!r})")
    amount = _find(entry, "Amt")
    reference = (
        _text(entry, "AcctSvcrRef")
        or _text(entry, "NtryDtls", "TxDtls", "Refs", "AcctSvcrRef")
        or _text(entry, "NtryRef")
        or _text(entry, "NtryDtls", "TxDtls", "Refs", "EndToEndId")
    )
    memo_parts = [
        str(n.text).strip()
        for n in _all(entry, "Ref")
        if n.text and _local(n.getparent().tag) == "CdtrRefInf"
    ]
    memo_parts += [str(n.text).strip() for n in _all(entry, "Ustrd") if n.text]
    return Entry(
        line=line,
        fields={
            "amount": (amount.text or "").strip() if amount is not None else "",
            "currency": amount.get("Ccy", "") if amount is not None else "",
            "bank_reference": reference or "",
            "memo": " ".join(memo_parts) or None,
            "value_date": _date_of(entry, "ValDt"),
            "booking_date": _date_of(entry, "BookgDt"),
        },
    )


def parse_camt053(stream: IO[bytes]) -> Iterator[Entry]:
    """Entries of a camt.053 statement, streamed; a DOCTYPE (entities) is refused."""
    events = etree.iterparse(
        stream,
        events=("end",),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )
    seen_document = False
    try:
        for _event, element in events:
            if not seen_document:
                seen_document = True
                docinfo = element.getroottree().docinfo
                if docinfo.doctype:
                    raise ValidationError("file", "a DOCTYPE is not allowed in a statement")
            if _local(element.tag) != "Ntry":
                continue
            yield _camt_entry(element)
            # Free what was parsed so far: memory stays flat over a large statement.
            element.clear(keep_tail=True)
            parent = element.getparent()
            while parent is not None and element.getprevious() is not None:
                del parent[0]
    except etree.XMLSyntaxError as exc:
        raise ValidationError("file", f"not well-formed XML: {exc}") from None


# --- import ------------------------------------------------------------------------------------


def detect(path: Path, given: str | None) -> str:
    if given is not None:
        fmt = given.strip().lower().replace(".", "").replace("-", "")
        if fmt not in FORMATS:
            raise ValidationError("format", f"must be one of {', '.join(FORMATS)}")
        return fmt
    with path.open("rb") as handle:
        head = handle.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "camt053" if head.startswith(b"<") else "csv"


def entries(path: Path, fmt: str) -> Iterator[Entry]:
    if fmt == "csv":
        with path.open("r", encoding="utf-8-sig", newline="") as text:
            yield from parse_csv(text)
    else:
        with path.open("rb") as raw:
            yield from parse_camt053(raw)


def _count(result: dict[str, Any], status: str, duplicate: bool) -> None:
    if duplicate:
        result["duplicates"] += 1
    else:
        result[status] += 1


def _receive_batch(
    uow: UnitOfWork, batch: list[Entry], result: dict[str, Any], now: datetime, *, savepoints: bool
) -> None:
    """One entry at a time (each in a savepoint, or each committed on its own): the path a
    chunk takes when the bulk one cannot place an error on its line."""
    for entry in batch:
        assert entry.fields is not None
        try:
            incoming = bank.check(**entry.fields)
        except DomainError as exc:
            result["errors"].append({"line": entry.line, "field": exc.field, "message": str(exc)})
            continue
        try:
            if savepoints:
                with uow.session.begin_nested():
                    outcome = bank.receive(uow, incoming, source="import", now=now)
            else:
                outcome = bank.receive(uow, incoming, source="import", now=now)
                uow.commit()
        except DomainError as exc:
            if not savepoints:
                uow.rollback()
            result["errors"].append({"line": entry.line, "field": exc.field, "message": str(exc)})
            continue
        result["transfers"] += 1
        _count(result, outcome["status"], bool(outcome["duplicate"]))


def _receive_chunk(
    uow: UnitOfWork, batch: list[Entry], result: dict[str, Any], now: datetime
) -> None:
    """The whole chunk in bulk (worker/bank/bulk.py), in the caller's transaction."""
    lines: list[int] = []
    items: list[bank.Incoming] = []
    for entry in batch:
        assert entry.fields is not None
        try:
            items.append(bank.check(**entry.fields))
        except DomainError as exc:
            result["errors"].append({"line": entry.line, "field": exc.field, "message": str(exc)})
            continue
        lines.append(entry.line)
    outcomes = bulk.receive_many(uow, items, source="import", now=now)
    for line, outcome in zip(lines, outcomes, strict=True):
        if isinstance(outcome, DomainError):
            result["errors"].append({"line": line, "field": outcome.field, "message": str(outcome)})
            continue
        result["transfers"] += 1
        _count(result, outcome["status"], bool(outcome["duplicate"]))


def import_entries(uow: UnitOfWork, items: Iterator[Entry], now: datetime) -> dict[str, Any]:
    """Receive every credit entry, BATCH per transaction; returns `{transfers, matched,
    partial, unapplied, unmatched, duplicates, skipped, errors: [{line, field, message}]}`.

    `transfers` counts the credit entries received (duplicates included). A chunk goes in
    whole or not at all. One the bulk path cannot place an error of on its line (a payment
    the charge engine refused) is rolled back and redone one entry per savepoint; one that
    meets a deadlock (an import locking accounts in another order) is rolled back and redone
    one entry per transaction."""
    result: dict[str, Any] = {
        "transfers": 0,
        "matched": 0,
        "partial": 0,
        "unapplied": 0,
        "unmatched": 0,
        "duplicates": 0,
        "skipped": 0,
        "errors": [],
    }
    batch: list[Entry] = []

    def restore(snapshot: dict[str, Any]) -> None:
        uow.rollback()
        result.clear()
        result.update({k: (list(v) if isinstance(v, list) else v) for k, v in snapshot.items()})

    def flush() -> None:
        if not batch:
            return
        snapshot = {k: (list(v) if isinstance(v, list) else v) for k, v in result.items()}
        try:
            try:
                _receive_chunk(uow, batch, result, now)
            except bulk.Redo as exc:
                log.warning("statement chunk redone one entry at a time: %s", str(exc)[:200])
                restore(snapshot)
                _receive_batch(uow, batch, result, now, savepoints=True)
            uow.commit()
        except OperationalError as exc:
            log.warning(
                "statement chunk of %d rolled back (%s); one entry at a time",
                len(batch),
                str(exc).splitlines()[0][:200],
            )
            restore(snapshot)
            _receive_batch(uow, batch, result, now, savepoints=False)
        batch.clear()

    for entry in items:
        if entry.error is not None:
            result["errors"].append(entry.error)
        elif entry.debit:
            result["skipped"] += 1
        else:
            batch.append(entry)
            if len(batch) >= BATCH:
                flush()
    flush()
    return result


def import_file(
    uow: UnitOfWork, path: object, fmt: object = None, now: datetime | None = None
) -> dict[str, Any]:
    """`bank import FILE [--format camt053/csv]`: see the module doc."""
    if not isinstance(path, str) or not path.strip():
        raise ValidationError("file", "is required (a path)")
    file = Path(path.strip()).expanduser()
    if not file.is_file():
        raise ValidationError("file", f"no such file: {str(file)[:120]!r}")
    kind = detect(file, fmt if isinstance(fmt, str) else None)
    return {"format": kind, **import_entries(uow, entries(file, kind), now or clock.now())}


def parse_text(text: str, fmt: str) -> list[Entry]:
    """Entries of a statement held in memory (tests, the benchmark)."""
    if fmt == "csv":
        return list(parse_csv(io.StringIO(text)))
    return list(parse_camt053(io.BytesIO(text.encode("utf-8"))))
