"""Auto-reload benchmark (not a test, never in CI).

Builds N accounts (default 1,000,000) in PostgreSQL with 1% due for a reload, then prints:
- sweep selection time for all due ids (median of 10, warm);
- time and charges/s to charge every due account with stub PSP latency 0 ms and 300 ms;
- the same fleet's rate for a no-op Celery task (the ceiling);
- crossing -> charged latency p50/p99 for on-debit triggers, sent while the 300 ms sweep
  backlog is running;
- the most PostgreSQL connections seen.

    python bench/auto_reload.py                 # local PostgreSQL/Redis, database bw_bench_ar
    python bench/auto_reload.py --accounts 100000 --skip-build

Fleet: 2 worker processes, thread pool (PSP calls are I/O-bound), WORKERS x CONCURRENCY
tasks in flight; DB pool per process sized so PostgreSQL connections stay <= 80.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DB_NAME = "bw_bench_ar"
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "40"))  # threads per worker
# Per worker process: 26 connections for 40 threads (a thread holds one only around its
# transactions), + the stub PSP's own up to 10: 2 x 36 + the bench's own stays <= 80.
POOL = {"DB_POOL_SIZE": os.environ.get("BENCH_DB_POOL_SIZE", "21"), "DB_MAX_OVERFLOW": "5"}


def setup_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}")
    env.setdefault("BROKER_URL", "redis://127.0.0.1:6379/12")
    env["RESULT_BACKEND"] = env["BROKER_URL"]
    env["AUTO_RELOAD_MAX_PER_DAY"] = "1000"
    os.environ.update(env)
    return env


def build(n: int, due_every: int) -> None:
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    from worker.db.migrate import upgrade

    upgrade()
    dsn = os.environ["DATABASE_URL"].replace("+psycopg", "")
    at = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO accounts (id, name, currency, country, status, emails, locale,
                display_currency, balance, auto_reload_enabled, auto_reload_threshold,
                auto_reload_amount, auto_reload_method_id, alerts_enabled,
                auto_reload_declines, created_at, updated_at)
            SELECT 'acc_b' || lpad(g::text, 9, '0'), 'bench ' || g, 'EUR', 'GB', 'active',
                '[]'::jsonb, 'en', 'EUR', 0, true,
                CASE WHEN g %% %(every)s = 0 THEN 10 ELSE 0 END, 20,
                CASE WHEN g %% %(every)s = 0 THEN 'pm_b' || lpad(g::text, 9, '0') END,
                false, 0, %(at)s, %(at)s
            FROM generate_series(1, %(n)s) g""",
            {"n": n, "every": due_every, "at": at},
        )
        conn.execute(
            """
            INSERT INTO ledger_accounts (code, currency, account_id, created_at)
            SELECT 'customer:' || id, 'EUR', id, %(at)s FROM accounts""",
            {"at": at},
        )
        conn.execute(
            """
            INSERT INTO payment_methods (id, account_id, psp, type, token, fingerprint, display,
                brand, last4, expiry, is_default, created_at)
            SELECT auto_reload_method_id, id, 'braintree', 'card', 'bt_bench_' || id, md5(id),
                'Visa ending 1881', 'Visa', '1881', '12/2030', true, %(at)s
            FROM accounts WHERE auto_reload_method_id IS NOT NULL""",
            {"at": at},
        )
        conn.execute("VACUUM ANALYZE")


def reset_charges() -> None:
    import psycopg

    dsn = os.environ["DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('psp_stub_remote_charges')").fetchone()
        stub = ", psp_stub_remote_charges" if row and row[0] else ""
        # CASCADE: the invoices, refunds and settlement rows that name a charge go too.
        conn.execute(
            f"TRUNCATE charges, postings, ledger_transactions, events, mail_outbox{stub} CASCADE"
        )
        crossing = "SELECT id FROM accounts WHERE name LIKE 'bench-cross-%'"
        conn.execute(f"DELETE FROM payment_methods WHERE account_id IN ({crossing})")
        conn.execute(f"DELETE FROM ledger_accounts WHERE account_id IN ({crossing})")
        conn.execute("DELETE FROM accounts WHERE name LIKE 'bench-cross-%'")
        conn.execute("DELETE FROM ledger_accounts WHERE account_id IS NULL")
        conn.execute(
            "UPDATE accounts SET balance = 0, status = 'active', suspension_reason = NULL,"
            " auto_reload_backoff_until = NULL, auto_reload_capped_until = NULL"
            " WHERE balance <> 0 OR status <> 'active'"
        )
        conn.execute("VACUUM ANALYZE accounts")
    import redis

    redis.Redis.from_url(os.environ["BROKER_URL"]).flushdb()


def selection_ms() -> tuple[float, int]:
    from worker.auto_reload.sweep import due_query
    from worker.db.session import unit_of_work
    from worker.kernel.clock import now

    timings = []
    count = 0
    with unit_of_work() as uow:
        uow.session.scalars(due_query(now())).all()  # warm
        for _ in range(10):
            started = time.perf_counter()
            count = len(uow.session.scalars(due_query(now())).all())
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), count


class Fleet:
    def __init__(self, env: dict[str, str], latency_ms: int) -> None:
        self.procs = []
        for i in range(WORKERS):
            log = open(f"/tmp/bench_ar_worker{i}.log", "ab")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "worker",
                        "worker",
                        "--loglevel=WARNING",
                        "--pool=threads",
                        f"--concurrency={CONCURRENCY}",
                        f"--hostname=bench{i}@%h",
                        "--without-gossip",
                        "--without-mingle",
                    ],
                    env={**env, **POOL, "PSP_STUB_LATENCY_MS": str(latency_ms)},
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        atexit.register(self.stop)
        from worker.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(app.control.ping(timeout=1.0) or []) >= WORKERS:
                return
        raise RuntimeError("bench workers did not start; see /tmp/bench_ar_worker*.log")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                continue
            os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


class ConnectionWatch:
    def __init__(self) -> None:
        import psycopg

        self.conn = psycopg.connect(ADMIN_DSN, autocommit=True)
        self.peak = 0

    def sample(self) -> None:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (DB_NAME,)
        ).fetchone()
        self.peak = max(self.peak, int(row[0]) if row else 0)


def succeeded_reloads() -> int:
    from sqlalchemy import func, select

    from worker.charges.models import Charge
    from worker.db.session import unit_of_work

    with unit_of_work() as uow:
        return int(
            uow.session.scalar(
                select(func.count()).select_from(Charge).where(Charge.status == "succeeded")
            )
            or 0
        )


def noop_rate(env: dict[str, str], n: int, watch: ConnectionWatch) -> float:
    from celery import group

    from worker.celery import app

    fleet = Fleet(env, 0)
    try:
        started = time.perf_counter()
        results = group(app.signature("celery.accumulate", args=[i]) for i in range(n))
        results.apply_async().get(timeout=600)
        watch.sample()
        return n / (time.perf_counter() - started)
    finally:
        fleet.stop()


def charge_run(
    env: dict[str, str], latency_ms: int, due: int, watch: ConnectionWatch, crossings: int = 0
) -> tuple[float, float, list[float]]:
    from worker.accounts import service as accounts
    from worker.auto_reload import configure
    from worker.auto_reload import sweep as sweeps
    from worker.celery import app, dispatch
    from worker.db.session import unit_of_work
    from worker.kernel.clock import now
    from worker.ledger import adjustments
    from worker.payment_methods import service as payment_methods

    cross_ids = []
    for i in range(crossings):  # accounts one debit away from crossing their threshold
        with unit_of_work() as uow:
            account_id = accounts.create(uow, name=f"bench-cross-{i}", now=now())["id"]
        with unit_of_work() as uow:
            payment_methods.add(
                uow,
                account_id=account_id,
                psp="braintree",
                nonce=f"fake-valid-visa-nonce:bench-x{i}",
                now=now(),
            )
            adjustments.adjust(
                uow, account_id=account_id, amount="10.50", reason="bench", now=now()
            )
        with unit_of_work() as uow:
            configure.configure(uow, account_id=account_id, threshold="10", amount="20", now=now())
        cross_ids.append(account_id)
    fleet = Fleet(env, latency_ms)
    try:
        started = time.perf_counter()
        with unit_of_work(dispatch=dispatch) as uow:
            sweeps.sweep(uow, now())
        for account_id in cross_ids:
            time.sleep(0.1)
            app.send_task("balance.usage.debit", args=[account_id, "1.00", "bench-cross"])
        total = due + len(cross_ids)
        deadline = time.monotonic() + 900
        while (done := succeeded_reloads()) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {total} reloads succeeded after 900 s")
            watch.sample()
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        fleet.stop()
    latencies = []
    if cross_ids:  # crossing = the debit's commit; charged = the reload charge's completion
        from sqlalchemy import select

        from worker.charges.models import Charge
        from worker.ledger.models import LedgerTransaction

        with unit_of_work() as uow:
            crossed = dict(
                uow.session.execute(
                    select(LedgerTransaction.account_id, LedgerTransaction.created_at).where(
                        LedgerTransaction.account_id.in_(cross_ids),
                        LedgerTransaction.kind == "usage_debit",
                    )
                ).all()
            )
            for account_id, completed in uow.session.execute(
                select(Charge.account_id, Charge.completed_at).where(
                    Charge.account_id.in_(cross_ids)
                )
            ):
                latencies.append((completed - crossed[account_id]).total_seconds())
    return elapsed, done / elapsed, latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--due-every", type=int, default=100, help="1 in N accounts is due")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--crossings", type=int, default=100)
    parser.add_argument(
        "--runs",
        default="noop,0,300",
        help="which fleet runs to make (comma-separated: noop, 0, 300); the rest show n/a",
    )
    args = parser.parse_args()
    env = setup_env()
    from config import get_settings

    sys.path.insert(0, str(ROOT))
    # Workers left by an interrupted run would consume this run's queue: stop them first.
    subprocess.run(["pkill", "-9", "-f", "hostname=bench[0-9]@"], check=False)
    if not args.skip_build:
        started = time.perf_counter()
        build(args.accounts, args.due_every)
        print(
            f"built {args.accounts:,} accounts in {time.perf_counter() - started:.0f} s", flush=True
        )
    reset_charges()
    select_ms, due = selection_ms()
    watch = ConnectionWatch()
    runs = set(args.runs.split(","))
    nan = float("nan")
    ceiling = noop_rate(env, due, watch) if "noop" in runs else nan
    t0 = rate0 = t300 = rate300 = nan
    lat: list[float] = []
    if "0" in runs:
        reset_charges()
        t0, rate0, _ = charge_run(env, 0, due, watch)
    if "300" in runs:
        reset_charges()
        t300, rate300, lat = charge_run(env, 300, due, watch, crossings=args.crossings)
    lat.sort()
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")

    rows = [
        (
            "sweep selection of all due ids (median of 10, warm)",
            f"{select_ms:.1f} ms",
            f"{due:,} due of {args.accounts:,}",
            "<= 25 ms",
        ),
        ("no-op Celery task rate (ceiling)", f"{ceiling:,.0f} /s", "celery.accumulate", ""),
        (
            "charge all due, PSP latency 0 ms",
            f"{t0:.1f} s",
            f"{rate0:,.0f} charges/s",
            f">= {ceiling / 2:,.0f}/s (half the ceiling)",
        ),
        (
            "charge all due, PSP latency 300 ms",
            f"{t300:.1f} s",
            f"{rate300:,.0f} charges/s",
            "<= 120 s",
        ),
        (
            "on-debit crossing -> charged, during the 300 ms backlog",
            f"p50 {p50:.2f} s",
            f"p99 {p99:.2f} s ({len(lat)} debits)",
            "p99 <= 5 s",
        ),
        ("peak PostgreSQL connections", str(watch.peak), "", "<= 80"),
    ]
    print(
        f"\nauto-reload benchmark, {datetime.now(UTC):%Y-%m-%d}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, fleet: {WORKERS} "
        f"workers x {CONCURRENCY} threads, DB pool {POOL}, "
        f"AUTO_RELOAD_BATCH_SIZE={get_settings().auto_reload_batch_size}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}} | {'result':>12} | {'detail':<32} | target")
    print("-" * (width + 70))
    for name, result, detail, target in rows:
        print(f"{name:<{width}} | {result:>12} | {detail:<32} | {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
