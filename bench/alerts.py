"""Low-balance alert scan benchmark (not a test, never in CI).

Builds N accounts (default 1,000,000) in PostgreSQL, every one with alerts configured, 1%
armed and below their threshold (due), then prints:
- the scan's selection of all due ids (the conditions of `alerts.due_query`, without
  FOR UPDATE / LIMIT), median of 10 warm runs, and the EXPLAIN line naming the index;
- the scan's real first batch (`alerts.due_query(ALERT_BATCH_SIZE)`, FOR UPDATE, in a
  transaction that is rolled back), median of 10 warm runs;
- one full `alerts.scan()` firing every due alert (events + rendered mails queued in the
  outbox, no SMTP, no broker), alerts/s, and a second scan right after (alerts 0).

    python bench/alerts.py                      # local PostgreSQL, database bw_bench_alerts
    python bench/alerts.py --accounts 100000
    python bench/alerts.py --skip-build         # reuse the accounts; alert state is reset

The fleet (every g = 1..N, id acc_a<g>) besides the 1% due (g % 100 = 0):
  g % 100 = 1     sent, still below (alerted before): must not fire again
  g % 100 = 2     alerts turned off, below the threshold: must not fire
  g % 100 = 3     armed, balance exactly at the threshold: not below, must not fire
  g % 1000 = 4    sent, back at or above the threshold: the scan re-arms them (safety net)
  the rest        armed, above the threshold
Thresholds 10 / 25 / 100, EUR / GBP / USD, locales en / ja / zh, one or two addresses.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common  # bench/common.py: the benchmarks run as `python bench/<name>.py`

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "bw_bench_alerts"
DB_URL = common.db_url(DB_NAME)
LOG_FILE = "/tmp/bench_alerts.log"
TARGET_SELECT_MS = 50.0

# Per-account shape, from g (the number in the id). Shared by build() and reset_alerts(),
# which pass parameters: a literal % is written %%.
G = "substr(id, 6)::int"
THRESHOLD = "(CASE g %% 3 WHEN 0 THEN 10 WHEN 1 THEN 25 ELSE 100 END)::numeric"
BALANCE = f"""CASE
    WHEN g %% 100 IN (0, 1, 2) THEN {THRESHOLD} - 0.01 - (g %% 900) / 100.0
    WHEN g %% 100 = 3 THEN {THRESHOLD}
    ELSE {THRESHOLD} + 0.01 + (g %% 100000) / 100.0 END"""
STATE = "CASE WHEN g %% 100 = 1 OR g %% 1000 = 4 THEN 'sent' ELSE 'armed' END"
SENT_AT = "CASE WHEN g %% 100 = 1 OR g %% 1000 = 4 THEN %(sent)s END"


def build(n: int) -> None:
    import psycopg

    common.fresh_database(DB_NAME)
    at = datetime.now(UTC)
    with psycopg.connect(DB_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            f"""
            INSERT INTO accounts (id, name, currency, country, status, emails, locale,
                display_currency, balance, auto_reload_enabled, auto_reload_declines,
                alerts_enabled, alert_threshold, alert_state, alert_sent_at,
                created_at, updated_at)
            SELECT 'acc_a' || lpad(g::text, 9, '0'), 'Bench customer ' || g,
                cur, CASE cur WHEN 'GBP' THEN 'GB' WHEN 'USD' THEN 'US' ELSE 'DE' END,
                'active',
                CASE WHEN g %% 13 = 0
                    THEN jsonb_build_array('billing+' || g || '@example.com',
                                           'cfo+' || g || '@example.org')
                    ELSE jsonb_build_array('billing+' || g || '@example.com') END,
                CASE g %% 11 WHEN 0 THEN 'ja' WHEN 1 THEN 'zh' ELSE 'en' END,
                cur, {BALANCE}, false, 0,
                g %% 100 <> 2, {THRESHOLD}, {STATE}, {SENT_AT},
                %(at)s, %(at)s
            FROM generate_series(1, %(n)s) g,
                LATERAL (SELECT CASE g %% 7 WHEN 0 THEN 'GBP' WHEN 1 THEN 'USD'
                                ELSE 'EUR' END AS cur) c""",
            {"n": n, "at": at, "sent": at - timedelta(days=1)},
        )
        conn.execute("VACUUM ANALYZE accounts")


def reset_alerts() -> None:
    """Back to the built state: no events or mails, each account's alert state by its g."""
    import psycopg

    at = datetime.now(UTC)
    with psycopg.connect(DB_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("TRUNCATE events, mail_outbox")
        conn.execute(
            f"""
            UPDATE accounts a SET alert_state = s.state, alert_sent_at = s.sent_at
            FROM (SELECT id, {STATE} AS state, {SENT_AT} AS sent_at
                  FROM (SELECT id, {G} AS g FROM accounts) x) s
            WHERE a.id = s.id AND (a.alert_state <> s.state
                OR (a.alert_sent_at IS NULL) <> (s.sent_at IS NULL))""",
            {"sent": at - timedelta(days=1)},
        )
        conn.execute("VACUUM ANALYZE accounts")
        conn.execute("VACUUM ANALYZE events")
        conn.execute("VACUUM ANALYZE mail_outbox")


def expected() -> dict[str, int]:
    """What the fleet holds, counted by g (sequential scan), independent of the index."""
    import psycopg

    with psycopg.connect(DB_URL.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute(
            f"""
            SELECT count(*),
                count(*) FILTER (WHERE g % 100 = 0),
                count(*) FILTER (WHERE g % 100 = 1),
                count(*) FILTER (WHERE g % 100 = 2),
                count(*) FILTER (WHERE g % 100 = 3),
                count(*) FILTER (WHERE g % 1000 = 4)
            FROM (SELECT {G} AS g FROM accounts) x"""
        ).fetchone()
    assert row is not None
    keys = ("accounts", "due", "sent_below", "disabled_below", "at_threshold", "sent_recovered")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def all_due_ids_query() -> Any:
    """The scan's first read: due_query's conditions and order, every id, no lock, no LIMIT."""
    from sqlalchemy import select

    from worker.alerts.service import due_query
    from worker.ledger.models import Account

    where = due_query(1).whereclause
    assert where is not None
    return select(Account.id).where(where).order_by(Account.id)


def explain(session: Any, stmt: Any) -> list[str]:
    """EXPLAIN with the statement's own bound parameters, as the scan sends it."""
    conn = session.connection()
    compiled = stmt.compile(dialect=conn.dialect)
    rows = conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params).all()
    return [r[0] for r in rows]


def index_line(plan: list[str], index: str = "ix_accounts_alert_due") -> str:
    for line in plan:
        if index in line:
            return line.strip().removeprefix("->").strip()
    return f"NOT USING {index}: " + plan[0]


@dataclass
class Selection:
    all_ms: float
    all_count: int
    all_plan: list[str]
    batch_ms: float
    batch_count: int
    batch_plan: list[str]
    sql: str


def selection(batch: int) -> Selection:
    from sqlalchemy.orm import sessionmaker

    from worker.alerts.service import due_query
    from worker.db.session import get_engine

    make = sessionmaker(bind=get_engine(), expire_on_commit=False)
    stmt = all_due_ids_query()
    all_ms, count = [], 0
    with make() as session:
        all_plan = explain(session, stmt)
        batch_plan = explain(session, due_query(batch))
        session.scalars(stmt).all()  # warm
        for _ in range(10):
            started = time.perf_counter()
            count = len(session.scalars(stmt).all())
            all_ms.append((time.perf_counter() - started) * 1000)
        session.rollback()
    batch_ms, got = [], 0
    for i in range(11):  # the first run warms
        with make() as session:
            started = time.perf_counter()
            got = len(list(session.scalars(due_query(batch))))
            elapsed = (time.perf_counter() - started) * 1000
            session.rollback()  # release the row locks; nothing was changed
        if i:
            batch_ms.append(elapsed)
    return Selection(
        all_ms=statistics.median(all_ms),
        all_count=count,
        all_plan=all_plan,
        batch_ms=statistics.median(batch_ms),
        batch_count=got,
        batch_plan=batch_plan,
        sql=str(stmt.compile(dialect=get_engine().dialect)),
    )


def run_scan() -> tuple[float, dict[str, Any]]:
    from worker.alerts import service as alerts
    from worker.db.session import unit_of_work
    from worker.kernel.clock import now

    started = time.perf_counter()
    with unit_of_work() as uow:  # no dispatcher: follow-ups (relay, mail send) are dropped
        result = alerts.scan(uow, now())
    return time.perf_counter() - started, result


def outcome() -> dict[str, int]:
    import psycopg

    with psycopg.connect(DB_URL.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute(
            f"""
            SELECT
                (SELECT count(*) FROM events WHERE type = 'balance.low'),
                (SELECT count(*) FROM events WHERE type = 'balance.low'
                    AND substr(account_id, 6)::int % 100 <> 0),
                (SELECT count(*) FROM mail_outbox WHERE kind = 'balance.low'
                    AND status = 'pending'),
                (SELECT count(*) FROM (SELECT {G} AS g, alert_state FROM accounts) x
                    WHERE g % 100 = 0 AND alert_state <> 'sent'),
                (SELECT count(DISTINCT locale) FROM accounts a JOIN mail_outbox m
                    ON m.account_id = a.id)"""
        ).fetchone()
    assert row is not None
    keys = ("events", "wrong_events", "mails", "due_not_sent", "locales")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--skip-build", action="store_true", help="reuse bw_bench_alerts")
    args = parser.parse_args()
    common.point_at(DB_NAME)
    common.quiet_logs(LOG_FILE)
    from config import get_settings

    batch = get_settings().alert_batch_size
    if not args.skip_build:
        started = time.perf_counter()
        build(args.accounts)
        print(
            f"built {args.accounts:,} accounts in {time.perf_counter() - started:.0f} s", flush=True
        )
    reset_alerts()
    fleet = expected()
    sel = selection(batch)
    first_s, first = run_scan()
    second_s, second = run_scan()
    out = outcome()

    due = fleet["due"]
    alerted = int(first["alerted"])
    checks = {
        "selection found every due id": sel.all_count == due,
        f"first batch holds {batch}": sel.batch_count == min(batch, due),
        "scan alerted every due account": alerted == due,
        "one balance.low event per due account, none else": out["events"] == due
        and out["wrong_events"] == 0,
        "one pending mail per due account": out["mails"] == due,
        "every due account now sent": out["due_not_sent"] == 0,
        "second scan alerted 0": second["alerted"] == 0,
        "ix_accounts_alert_due used": "NOT USING" not in index_line(sel.all_plan)
        and "NOT USING" not in index_line(sel.batch_plan),
    }

    def ok(good: bool) -> str:
        return "ok" if good else "MISSED"

    all_ms, batch_ms = sel.all_ms, sel.batch_ms
    rows = [
        (
            "selection of all due ids (median of 10, warm)",
            f"{all_ms:.1f} ms",
            f"{sel.all_count:,} due of {fleet['accounts']:,}",
            f"<= {TARGET_SELECT_MS:.0f} ms",
            ok(all_ms <= TARGET_SELECT_MS and checks["selection found every due id"]),
        ),
        (
            f"first batch, due_query({batch}) FOR UPDATE (median of 10)",
            f"{batch_ms:.1f} ms",
            f"{sel.batch_count:,} rows locked, rolled back",
            f"<= {TARGET_SELECT_MS:.0f} ms",
            ok(batch_ms <= TARGET_SELECT_MS and checks[f"first batch holds {batch}"]),
        ),
        (
            "full scan: fire every due alert",
            f"{first_s:.1f} s",
            f"{alerted / first_s:,.0f} alerts/s, {alerted:,} alerted",
            f"alerts {due:,}",
            ok(
                checks["scan alerted every due account"]
                and checks["one balance.low event per due account, none else"]
                and checks["one pending mail per due account"]
                and checks["every due account now sent"]
            ),
        ),
        (
            "  of which re-armed (sent, balance recovered)",
            f"{first['rearmed']:,}",
            f"{out['events']:,} events, {out['mails']:,} mails ({out['locales']} locales)",
            f"re-arms {fleet['sent_recovered']:,}",
            ok(first["rearmed"] == fleet["sent_recovered"]),
        ),
        (
            "second scan right after",
            f"{second_s * 1000:.1f} ms",
            f"{second['alerted']:,} alerted, {second['rearmed']:,} re-armed",
            "alerts 0",
            ok(checks["second scan alerted 0"] and second["rearmed"] == 0),
        ),
    ]
    print(
        f"\nalert-scan benchmark, {datetime.now(UTC):%Y-%m-%d}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL {common.pg_version()}, ALERT_BATCH_SIZE {batch}, no SMTP, no broker"
    )
    print(
        f"fleet: {fleet['accounts']:,} accounts, {due:,} due (armed, below); not due: "
        f"{fleet['sent_below']:,} sent and below, {fleet['disabled_below']:,} off and below, "
        f"{fleet['at_threshold']:,} at the threshold, {fleet['sent_recovered']:,} sent and "
        "recovered, the rest above"
    )
    headers = ("measure", "result", "detail", "target", "check")
    widths = [max(len(r[i]) for r in [*rows, headers]) for i in range(4)]
    line = " | ".join(
        [f"{headers[0]:<{widths[0]}}", f"{headers[1]:>{widths[1]}}"]
        + [f"{h:<{w}}" for h, w in zip(headers[2:4], widths[2:4], strict=True)]
        + [headers[4]]
    )
    print(line)
    print("-" * (sum(widths) + 3 * 3 + 9))
    for name, result, detail, target, status in rows:
        print(
            f"{name:<{widths[0]}} | {result:>{widths[1]}} | {detail:<{widths[2]}} | "
            f"{target:<{widths[3]}} | {status}"
        )
    print(f"\nplan, all due ids:  {sel.all_plan[0]}")
    print(f"plan, first batch:  {sel.batch_plan[0]}")
    print(f"                    ... {index_line(sel.batch_plan)}")
    print(f"query, all due ids: {' '.join(sel.sql.split())}")
    failed = [name for name, good in checks.items() if not good]
    if failed:
        print("FAILED: " + "; ".join(failed))
    print(f"scan log (one line per alert): {LOG_FILE}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
