"""Export benchmark (not a test, never in CI): `export transactions` of N rows, .xlsx and CSV.

Builds one EUR account shown in USD with N ledger transactions (default 1,000,000, one a
minute, amounts from -0.0099 to 99.99 with sub-cent digits, the running balance the ledger
keeps) inserted by one `INSERT ... SELECT generate_series` statement, and a USD reference rate
for every day they span. Then each measure runs in its own child process, so the peak
resident memory (`ru_maxrss`) is that measure's own:

- anchor: a plain SELECT of the same rows, streamed through a psycopg server-side cursor
  and discarded (the database and driver's floor for reading them);
- `worker.exports.service.export` to CSV and to .xlsx (display columns included), rows/s
  and the ratio to the anchor (time per row; an export's time includes importing the export code);
- the same two exports of the first tenth of the rows (`--to`), so the peak memory of a
  tenth and of the whole can be compared (bounded memory: they should be about equal);
- a child that only imports the export code: the resident floor every child starts from.

Postings are not generated: an export reads `ledger_transactions` only.

    python bench/exports.py                 # local PostgreSQL, database bw_bench_exports
    python bench/exports.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common  # bench/common.py: the benchmarks run as `python bench/<name>.py`

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "bw_bench_exports"
DB_URL = common.db_url(DB_NAME)
PLAIN_DSN = common.plain_dsn(DB_NAME)
ACCOUNT = "acc_bench_export"
START = datetime(2024, 1, 1, tzinfo=UTC)


def build(n: int) -> None:
    import psycopg

    common.fresh_database(DB_NAME)
    days = n // 1440 + 2
    with psycopg.connect(PLAIN_DSN, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO accounts (id, name, currency, country, status, emails, locale,
                display_currency, balance, auto_reload_enabled, auto_reload_declines,
                alerts_enabled, alert_state, unapplied, created_at, updated_at)
            VALUES (%(id)s, 'Bench export', 'EUR', 'GB', 'active', '[]'::jsonb, 'en', 'USD',
                0, false, 0, false, 'armed', 0, %(at)s, %(at)s)
            """,
            {"id": ACCOUNT, "at": START},
        )
        conn.execute(
            "INSERT INTO ledger_accounts (code, currency, account_id, created_at) "
            "VALUES (%(code)s, 'EUR', %(id)s, %(at)s)",
            {"code": f"customer:{ACCOUNT}", "id": ACCOUNT, "at": START},
        )
        # Every 50th row a top-up of 99.99, the others usage of 0.0001 to 0.0099: the
        # running balance is the sum so far (a window over the series).
        conn.execute(
            """
            INSERT INTO ledger_transactions (id, account_id, kind, reference, amount, currency,
                balance_after, description, created_at)
            SELECT 'txn_' || lpad(g::text, 9, '0'), %(id)s,
                CASE WHEN g %% 50 = 1 THEN 'top_up' ELSE 'usage' END,
                'ref-' || g, amount, 'EUR',
                sum(amount) OVER (ORDER BY g), 'bench row ' || g,
                %(start)s + g * interval '1 minute'
            FROM (
                SELECT g, CASE WHEN g %% 50 = 1 THEN 99.99
                               ELSE -((g %% 99) + 1) / 10000.0 END::numeric(20, 6) AS amount
                FROM generate_series(1, %(n)s) AS g
            ) AS s
            """,
            {"id": ACCOUNT, "start": START, "n": n},
        )
        conn.execute(
            "UPDATE accounts SET balance = (SELECT balance_after FROM ledger_transactions "
            "WHERE account_id = %(id)s ORDER BY created_at DESC, id DESC LIMIT 1) "
            "WHERE id = %(id)s",
            {"id": ACCOUNT},
        )
        # A USD rate every day (weekends too): 1.0500 + (day mod 200) / 10000.
        conn.execute(
            """
            INSERT INTO fx_rates (currency, rate_date, rate, source, imported_at)
            SELECT 'USD', (%(start)s::date - 1) + d, 1.05 + (d %% 200) / 10000.0, 'ECB',
                %(start)s
            FROM generate_series(0, %(days)s) AS d
            """,
            {"start": START, "days": days},
        )
        conn.execute("ANALYZE")


def child(measure: str, rows: int, out_dir: str) -> dict[str, Any]:
    """One measure in this (fresh) process; returns its time, rows and peak memory."""
    common.point_at(DB_NAME)
    until = None
    if measure.endswith("-tenth"):
        last = START + timedelta(minutes=rows // 10)
        until = (last - timedelta(days=1)).date().isoformat()
    started = time.perf_counter()
    done = 0
    if measure == "floor":
        from worker.exports import service
    elif measure == "anchor":
        import psycopg

        with psycopg.connect(PLAIN_DSN) as conn, conn.cursor(name="anchor") as cursor:
            cursor.itersize = 2000
            cursor.execute(
                "SELECT created_at, id, kind, reference, description, amount, balance_after, "
                "currency FROM ledger_transactions WHERE account_id = %s "
                "ORDER BY created_at, id",
                (ACCOUNT,),
            )
            for _ in cursor:
                done += 1
    else:
        from worker.db.session import unit_of_work
        from worker.exports import service

        fmt = measure.split("-")[0]
        with unit_of_work() as uow:
            result = service.export(
                uow.session,
                kind="transactions",
                account_id=ACCOUNT,
                out=Path(out_dir) / f"{measure}.{fmt}",
                until=until,
            )
        done = result["rows"]
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    size = sum(p.stat().st_size for p in Path(out_dir).glob(f"{measure}.*"))
    return {"measure": measure, "seconds": seconds, "rows": done, "peak_mib": peak_kib / 1024,
            "bytes": size}  # fmt: skip


def run_child(measure: str, rows: int, out_dir: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", measure, "--rows", str(rows), "--out", out_dir],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--skip-build", action="store_true", help="reuse the last database")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.out)))
        return
    common.point_at(DB_NAME)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    if not args.skip_build:
        started = time.perf_counter()
        build(args.rows)
        print(f"built {args.rows:,} ledger rows in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="bench_exports_") as out_dir:
        results = {
            m: run_child(m, args.rows, out_dir)
            for m in ("floor", "anchor", "csv", "xlsx", "csv-tenth", "xlsx-tenth")
        }
    anchor = results["anchor"]
    print(f"{'measure':<34}{'rows':>10}{'seconds':>10}{'rows/s':>10}{'x anchor':>10}"
          f"{'peak MiB':>10}{'file MB':>9}")  # fmt: skip
    for name, r in results.items():
        rate = r["rows"] / r["seconds"] if r["seconds"] and r["rows"] else 0
        # Per row: a tenth's export is compared with the anchor's time for as many rows.
        per_row = anchor["seconds"] / anchor["rows"]
        ratio = r["seconds"] / r["rows"] / per_row if r["rows"] else 0
        label = {
            "floor": "import only (resident floor)",
            "anchor": "anchor: plain SELECT, streamed",
            "csv": "export transactions CSV",
            "xlsx": "export transactions .xlsx",
            "csv-tenth": "CSV, first tenth (--to)",
            "xlsx-tenth": ".xlsx, first tenth (--to)",
        }[name]
        print(f"{label:<34}{r['rows']:>10,}{r['seconds']:>10.1f}{rate:>10,.0f}"
              f"{ratio:>10.1f}{r['peak_mib']:>10.0f}{r['bytes'] / 1e6:>9.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
