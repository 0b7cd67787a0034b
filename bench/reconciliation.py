"""Bank statement reconciliation benchmark (not a test, never in CI).

Builds N accounts (default 10,000) in PostgreSQL, each with its RF reference and one open
pro-forma of 50.00 EUR (a pending bank-transfer charge), writes a camt.053 statement of T
transfers (default 100,000) over them, then in the same run prints:

- anchor: the same file parsed and its rows written with a plain INSERT each (one
  statement per row, committed every 200 rows like the import) into a bare table;
- `bank import` of the statement (worker/bank/statements.py: every transfer recorded,
  matched and booked), transfers/s and the ratio to the anchor (target >= 1/3);
- the same statement imported again (every entry a duplicate);
- `balancectl audit` (cached balances == postings, every transaction sums to zero) and the
  unapplied-funds audit.

Per account (g = 1..N): transfer 0 is 50.00 naming the reference (pays the pro-forma:
charge succeeds, balance credited, final invoice numbered and mailed, `invoice.paid`);
transfers 1.. are 10.00-99.00 naming the reference (the account's unapplied funds); every
100th transfer names nobody (suspense).

    python bench/reconciliation.py                       # database bw_bench_recon
    python bench/reconciliation.py --transfers 20000 --accounts 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import common  # bench/common.py: the benchmarks run as `python bench/<name>.py`

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "bw_bench_recon"
DB_URL = common.db_url(DB_NAME)
BATCH = 200


def build(n: int) -> list[str]:
    """N accounts with an open 50.00 pro-forma each; returns their RF references."""
    import psycopg

    from worker.kernel.bank_settings import new_creditor_reference

    common.fresh_database(DB_NAME)
    at = datetime.now(UTC)
    refs = [new_creditor_reference() for _ in range(n)]
    year = at.year
    with psycopg.connect(DB_URL.replace("+psycopg", "")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE refs (g int, ref text)")
        with cur.copy("COPY refs (g, ref) FROM STDIN") as copy:
            for g, ref in enumerate(refs, 1):
                copy.write_row((g, ref))
        cur.execute(
            """
            INSERT INTO accounts (id, name, currency, country, status, emails, locale,
                display_currency, balance, auto_reload_enabled, auto_reload_declines,
                alerts_enabled, alert_state, company, bank_reference, unapplied,
                created_at, updated_at)
            SELECT 'acc_r' || lpad(g::text, 9, '0'), 'Bench ' || g, 'EUR', 'DE', 'active',
                jsonb_build_array('billing+' || g || '@example.com'),
                CASE g %% 3 WHEN 0 THEN 'ja' WHEN 1 THEN 'zh' ELSE 'en' END, 'EUR', 0, false, 0,
                false, 'armed', 'Company ' || g, ref, 0, %(at)s, %(at)s
            FROM refs""",
            {"at": at},
        )
        cur.execute(
            """
            INSERT INTO ledger_accounts (code, currency, account_id, created_at)
            SELECT 'customer:' || id, 'EUR', id, %(at)s FROM accounts""",
            {"at": at},
        )
        cur.execute(
            """
            INSERT INTO payment_methods (id, account_id, psp, type, token, display,
                is_default, created_at)
            SELECT 'pm_' || substr(id, 5), id, 'bank_transfer', 'bank_transfer', 'bank:' || id,
                'Bank transfer', true, %(at)s FROM accounts""",
            {"at": at},
        )
        cur.execute(
            """
            INSERT INTO charges (id, account_id, payment_method_id, psp, purpose, amount,
                currency, amount_minor, idempotency_key, status, attempts, sync_attempts,
                needs_attention, created_at, updated_at)
            SELECT 'ch_' || substr(id, 5), id, 'pm_' || substr(id, 5), 'bank_transfer',
                'top_up', 50, 'EUR', 5000, 'bench-' || id, 'pending', 1, 0, false, %(at)s, %(at)s
            FROM accounts""",
            {"at": at},
        )
        cur.execute(
            """
            INSERT INTO invoices (id, account_id, charge_id, kind, status, number, amount,
                currency, method, locale, issuer, customer, instructions, issued_at,
                created_at, updated_at)
            SELECT 'inv_' || substr(a.id, 5), a.id, 'ch_' || substr(a.id, 5), 'proforma',
                'open', 'PF-' || %(year)s || '-' || lpad(r.g::text, 6, '0'), 50, 'EUR',
                'bank_transfer', a.locale, '{"name": "Bench issuer", "address": "x"}'::jsonb,
                jsonb_build_object('account_id', a.id, 'name', a.name, 'company', a.company),
                NULL, %(at)s, %(at)s, %(at)s
            FROM accounts a JOIN refs r ON r.ref = a.bank_reference""",
            {"at": at, "year": year},
        )
        cur.execute(
            "INSERT INTO invoice_counters (series, year, last) VALUES ('PF', %s, %s)", (year, n)
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return refs


def write_statement(path: Path, refs: list[str], transfers: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.bank import camt

    n = len(refs)
    with path.open("w", encoding="utf-8") as out:
        out.write(camt.HEAD)
        for i in range(transfers):
            g, j = i % n, i // n
            amount = "50.00" if j == 0 else f"{10 + (i * 7) % 90}.00"
            memo = "thank you" if i % 100 == 99 else f"top-up {refs[g]}"
            out.write(camt.entry(f"STMT-{i:07d}", amount, memo))
        out.write(camt.TAIL)


def plain_insert(path: Path) -> tuple[float, int]:
    """The anchor: the same file parsed, each row one plain INSERT, committed per BATCH."""
    from sqlalchemy import text

    from worker.bank import statements
    from worker.db.session import get_engine

    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_plain"))
        conn.execute(
            text(
                "CREATE TABLE bench_plain (bank_reference text PRIMARY KEY, amount numeric(20,6),"
                " currency text, memo text, value_date date, booking_date date)"
            )
        )
    insert = text(
        "INSERT INTO bench_plain VALUES (:bank_reference, CAST(:amount AS numeric), :currency,"
        " :memo, CAST(:value_date AS date), CAST(:booking_date AS date))"
    )
    rows = 0
    start = time.perf_counter()
    conn = engine.connect()
    try:
        trans = conn.begin()
        for entry in statements.entries(path, "camt053"):
            if entry.fields is None:
                continue
            conn.execute(insert, entry.fields)
            rows += 1
            if rows % BATCH == 0:
                trans.commit()
                trans = conn.begin()
        trans.commit()
    finally:
        conn.close()
    return time.perf_counter() - start, rows


def run_import(path: Path) -> tuple[float, dict[str, object]]:
    from worker import wiring
    from worker.bank import statements
    from worker.db.session import unit_of_work

    wiring.install()
    start = time.perf_counter()
    with unit_of_work() as uow:
        result = statements.import_file(uow, str(path), "camt053")
    return time.perf_counter() - start, result


def audits() -> tuple[bool, int]:
    from worker.bank import service as bank
    from worker.db.session import unit_of_work
    from worker.ledger import service as ledger

    with unit_of_work() as uow:
        report = ledger.audit(uow.session)
        return bool(report["ok"]), len(bank.audit_unapplied(uow.session))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=100_000)
    args = parser.parse_args()
    common.point_at(DB_NAME)
    import logging

    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    refs = build(args.accounts)
    path = Path(f"/tmp/bench_recon_{args.transfers}.xml")
    write_statement(path, refs, args.transfers)
    print(
        f"built {args.accounts} accounts + statement {path.stat().st_size / 1e6:.1f} MB "
        f"in {time.perf_counter() - t:.1f} s"
    )
    anchor_s, rows = plain_insert(path)
    import_s, result = run_import(path)
    again_s, again = run_import(path)
    ok, bad_unapplied = audits()
    anchor_rate = rows / anchor_s
    rate = int(result["transfers"]) / import_s  # type: ignore[call-overload]
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"{datetime.now(UTC).date()}"
    )
    print(f"{'run':<34}{'rows':>9}{'seconds':>10}{'rows/s':>10}{'vs anchor':>11}")
    print(f"{'plain INSERT (anchor)':<34}{rows:>9}{anchor_s:>10.1f}{anchor_rate:>10.0f}{1:>11.2f}")
    print(
        f"{'bank import (reconcile)':<34}{result['transfers']:>9}{import_s:>10.1f}"
        f"{rate:>10.0f}{rate / anchor_rate:>11.2f}"
    )
    again_rate = int(again["transfers"]) / again_s  # type: ignore[call-overload]
    print(
        f"{'bank import again (duplicates)':<34}{again['transfers']:>9}{again_s:>10.1f}"
        f"{again_rate:>10.0f}{again_rate / anchor_rate:>11.2f}"
    )
    print(
        f"import: matched {result['matched']} partial {result['partial']} unapplied "
        f"{result['unapplied']} unmatched {result['unmatched']} errors {len(result['errors'])}"
        f"; again: duplicates {again['duplicates']}"
    )
    print(
        f"audit ok: {ok}; unapplied mismatches: {bad_unapplied}; target >= 0.33 of anchor: "
        f"{'met' if rate / anchor_rate >= 1 / 3 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
