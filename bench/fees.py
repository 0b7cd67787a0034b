"""Monthly-fee renewal benchmark (not a test, never in CI).

Builds N virtual numbers (default 1,000,000) on N/5 accounts in PostgreSQL, each account
with an opening balance booked in the ledger; 1% of the numbers (one on each of N/100
accounts) have their renewal due, and a tenth of those accounts cannot pay it. Prints:
- the collect job's selection of every due account (`collect.due_query`), median of 10
  warm runs, and the EXPLAIN line naming the index, beside the anchor: the same selection
  as one plain SQL statement sent with psycopg;
- one full `collect.collect()` run (every due fee paid or reported, events and rendered
  mails queued, no broker), fees/s, beside the anchor: one plain SQL UPDATE that takes all
  the due fees off the balances at once (rolled back), the database's floor for this work;
- a second run right after (paid 0) and the ledger audit.

    python bench/fees.py                   # local PostgreSQL, database bw_bench_fees
    python bench/fees.py --numbers 100000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common  # bench/common.py: the benchmarks run as `python bench/<name>.py`

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "bw_bench_fees"
DB_URL = common.db_url(DB_NAME)
PLAIN_DSN = common.plain_dsn(DB_NAME)
LOG_FILE = "/tmp/bench_fees.log"
PER_ACCOUNT = 5
# Number h (1..N) belongs to account g = (h - 1) / 5 + 1; h % 100 = 1 is due (one number on
# every 20th account); the due accounts with g % 200 = 1 hold 2.00 for a 5.00 fee.
DUE = "h %% 100 = 1"  # written for parameterised statements: %% is a literal %
POOR = "g %% 200 = 1"


def build(n: int, as_of: datetime) -> None:
    import psycopg

    common.fresh_database(DB_NAME)
    accounts = n // PER_ACCOUNT
    params = {"a": accounts, "n": n, "at": as_of, "created": as_of - timedelta(days=40)}
    with psycopg.connect(PLAIN_DSN, autocommit=True) as conn:
        conn.execute(
            f"""
            INSERT INTO accounts (id, name, currency, country, status, emails, locale,
                display_currency, balance, auto_reload_enabled, auto_reload_declines,
                alerts_enabled, alert_state, created_at, updated_at)
            SELECT 'acc_f' || lpad(g::text, 9, '0'), 'Bench numbers ' || g, 'EUR', 'GB',
                'active', jsonb_build_array('billing+' || g || '@example.com'),
                CASE g %% 3 WHEN 0 THEN 'ja' WHEN 1 THEN 'zh' ELSE 'en' END, 'EUR',
                CASE WHEN {POOR} THEN 2 ELSE 1000 END, false, 0, false, 'armed',
                %(created)s, %(created)s
            FROM generate_series(1, %(a)s) g""",
            params,
        )
        conn.execute(
            """INSERT INTO ledger_accounts (code, currency, account_id, created_at)
            VALUES ('adjustments:EUR', 'EUR', NULL, %(created)s)""",
            params,
        )
        conn.execute(
            """INSERT INTO ledger_accounts (code, currency, account_id, created_at)
            SELECT 'customer:' || id, 'EUR', id, %(created)s FROM accounts""",
            params,
        )
        conn.execute(
            """INSERT INTO ledger_transactions (id, account_id, kind, reference, amount,
                currency, balance_after, description, created_at)
            SELECT 'txn_open_' || id, id, 'adjustment', 'opening', balance, 'EUR', balance,
                'bench opening balance', %(created)s FROM accounts""",
            params,
        )
        conn.execute(
            """INSERT INTO postings (transaction_id, ledger_account_id, amount)
            SELECT 'txn_open_' || a.id, l.id, a.balance
            FROM accounts a JOIN ledger_accounts l ON l.account_id = a.id
            UNION ALL
            SELECT 'txn_open_' || a.id, s.id, -a.balance
            FROM accounts a, ledger_accounts s WHERE s.code = 'adjustments:EUR'"""
        )
        conn.execute(
            f"""
            INSERT INTO numbers (id, account_id, msisdn, country, monthly_fee, currency,
                status, anchor_at, periods_paid, next_renewal_at, created_at, updated_at)
            SELECT 'num_' || lpad(h::text, 9, '0'), 'acc_f' || lpad(g::text, 9, '0'),
                '+4474' || lpad(h::text, 8, '0'), 'GB',
                CASE WHEN {DUE} THEN 5 ELSE 1 + (h %% 7) END, 'EUR', 'active',
                r - interval '1 month', 1, r, %(created)s, %(created)s
            FROM generate_series(1, %(n)s) h,
                LATERAL (SELECT (h - 1) / {PER_ACCOUNT} + 1 AS g,
                    CASE WHEN {DUE} THEN %(at)s - (h %% 50) * interval '1 minute'
                         ELSE %(at)s + (1 + h %% 28) * interval '1 day' END AS r) x""",
            params,
        )
        conn.execute(
            """UPDATE accounts a SET next_fee_at = m.first
            FROM (SELECT account_id, min(next_renewal_at) AS first FROM numbers
                  GROUP BY account_id) m WHERE m.account_id = a.id"""
        )
        for table in ("accounts", "numbers", "ledger_accounts", "ledger_transactions", "postings"):
            conn.execute(f"VACUUM ANALYZE {table}")


def median_ms(call: Any, runs: int = 10) -> tuple[float, Any]:
    result = call()  # warm
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def selection(as_of: datetime) -> dict[str, Any]:
    import psycopg
    from sqlalchemy.orm import sessionmaker

    from worker.db.session import get_engine
    from worker.numbers import collect

    cutoff = as_of - timedelta(seconds=259200)
    stmt = collect.due_query(as_of, cutoff)
    make = sessionmaker(bind=get_engine())
    with make() as session:
        conn = session.connection()
        compiled = stmt.compile(dialect=conn.dialect)
        plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params)]
        ms, ids = median_ms(lambda: session.scalars(stmt).all())
    plain_sql = (
        "SELECT DISTINCT account_id FROM numbers WHERE status <> 'cancelled' "
        "AND next_renewal_at <= %s ORDER BY account_id"
    )
    with psycopg.connect(PLAIN_DSN, autocommit=True) as conn:
        anchor_ms, anchor = median_ms(lambda: conn.execute(plain_sql, (as_of,)).fetchall())
    return {
        "ms": ms,
        "count": len(ids),
        "plan": plan,
        "anchor_ms": anchor_ms,
        "anchor_count": len(anchor),
    }


def anchor_update(as_of: datetime) -> tuple[float, int]:
    """One plain UPDATE taking every payable due fee off its balance, rolled back."""
    import psycopg

    with psycopg.connect(PLAIN_DSN) as conn:
        started = time.perf_counter()
        cur = conn.execute(
            """UPDATE accounts a SET balance = a.balance - n.monthly_fee
            FROM numbers n WHERE n.account_id = a.id AND n.status <> 'cancelled'
              AND n.next_renewal_at <= %s AND a.balance >= n.monthly_fee""",
            (as_of,),
        )
        elapsed = time.perf_counter() - started
        conn.rollback()
    return elapsed, cur.rowcount


def run_collect(as_of: datetime) -> tuple[float, dict[str, Any]]:
    """One run, no time budget; the result also has `cpu_s`, this process's CPU seconds."""
    from worker import wiring
    from worker.db.session import unit_of_work
    from worker.numbers import collect

    wiring.install()
    started, cpu = time.perf_counter(), time.process_time()
    with unit_of_work() as uow:  # no dispatcher: follow-ups (relay, mail send) are dropped
        result = collect.collect(uow, as_of)
    result["cpu_s"] = time.process_time() - cpu
    return time.perf_counter() - started, result


def outcome() -> dict[str, int]:
    import psycopg

    with psycopg.connect(PLAIN_DSN, autocommit=True) as conn:
        row = conn.execute(
            """SELECT
                (SELECT count(*) FROM ledger_transactions WHERE kind = 'number_fee'),
                (SELECT count(DISTINCT reference) FROM ledger_transactions
                    WHERE kind = 'number_fee'),
                (SELECT count(*) FROM events WHERE type = 'fee.paid'),
                (SELECT count(*) FROM events WHERE type = 'fee.payment_failed'),
                (SELECT count(*) FROM mail_outbox WHERE kind = 'fee.payment_failed')"""
        ).fetchone()
    assert row is not None
    keys = ("fees", "distinct_refs", "paid_events", "failed_events", "failed_mails")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=1_000_000)
    args = parser.parse_args()
    common.point_at(DB_NAME)
    common.quiet_logs(LOG_FILE)
    from config import get_settings

    as_of = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    build(args.numbers, as_of)
    print(f"built {args.numbers:,} numbers in {time.perf_counter() - started:.0f} s", flush=True)
    due = args.numbers // 100
    poor = len(range(1, args.numbers // PER_ACCOUNT + 1, 200))
    sel = selection(as_of)
    anchor_s, anchor_rows = anchor_update(as_of)
    first_s, first = run_collect(as_of)
    second_s, second = run_collect(as_of)
    out = outcome()
    audited = common.audit_ok()
    paid = int(first["paid"])
    opening = args.numbers  # period 0 of every number is not booked by the bench build
    checks = {
        "selection found every due account": sel["count"] == due == sel["anchor_count"],
        "index used": any("ix_numbers_renewal_due" in line for line in sel["plan"]),
        "every payable fee paid once": paid == due - poor == out["fees"] == out["distinct_refs"],
        "every failure reported once": first["failed"] == poor == out["failed_events"]
        and out["failed_mails"] == poor,
        "second run paid 0": second["paid"] == 0 and second["failed"] == poor,
        "no errors": first["errors"] == 0 and second["errors"] == 0,
        "ledger audit ok": audited,
    }
    rows = [
        (
            "selection of every due account (median of 10, warm)",
            f"{sel['ms']:.1f} ms",
            f"{sel['count']:,} accounts",
        ),
        (
            "  anchor: the same selection, one plain SQL statement",
            f"{sel['anchor_ms']:.1f} ms",
            f"ratio {sel['ms'] / sel['anchor_ms']:.2f}",
        ),
        (
            f"collect run (FEES_BATCH_SIZE {get_settings().fees_batch_size})",
            f"{first_s:.1f} s",
            f"{paid / first_s:,.0f} fees/s; paid {paid:,}, failed {first['failed']:,}; "
            f"Python CPU {first['cpu_s'] * 1000 / (paid + first['failed']):.1f} ms per number",
        ),
        (
            "  anchor: one plain UPDATE of the payable balances",
            f"{anchor_s * 1000:.0f} ms",
            f"{anchor_rows / anchor_s:,.0f} rows/s; collect is "
            f"{(first_s / paid) / (anchor_s / anchor_rows):,.0f}x its cost per fee",
        ),
        (
            "second run right after",
            f"{second_s:.2f} s",
            f"paid {second['paid']}, failed {second['failed']:,} (reported before: no mail)",
        ),
    ]
    print(
        f"\nfee renewal benchmark, {datetime.now(UTC):%Y-%m-%d}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL "
        f"{common.pg_version()}, in-process, no broker, no SMTP, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"fleet: {args.numbers:,} numbers on {args.numbers // PER_ACCOUNT:,} accounts; "
        f"{due:,} due (one per account), {poor:,} of them on accounts that cannot pay; "
        f"{opening:,} earlier periods not in the ledger (the build books opening balances only)"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for name, result, detail in rows:
        print(f"{name:<{widths[0]}} | {result:>{widths[1]}} | {detail}")
    line = next((x for x in sel["plan"] if "ix_numbers" in x), sel["plan"][0])
    print(f"\nplan: {line.strip()}")
    for name, good in checks.items():
        print(f"{'ok    ' if good else 'FAILED'} {name}")
    print(f"log: {LOG_FILE}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
