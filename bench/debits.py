"""Usage debit benchmark (issue 16; not a test, never in CI). One run prints side by side:

- the fleet's no-op Celery task rate (`celery.accumulate`: the ceiling of one message per debit);
- `balance.usage.debit`, one message per debit, over 1,000 accounts and on one hot account;
- `balance.usage.debit_many`, batches of 500, over 1,000 accounts and on one hot account;
- the anchor: the same durable debit written by plain psycopg, per row (lock the account row,
  insert the transaction and its two postings, update the balance, commit), 4 connections;
- p50/p99 from `submit` to result through `worker.client.DebitBatcher` at 2,000 debits/s offered;
- `audit` after every run (cached balances equal their postings, every transaction sums to 0);
- where the CPU goes (Linux): ms of CPU per message for the no-op task and the single `debit`
  over 1,000 accounts, by process (this bench's producer, the workers' parents and their
  prefork children, PostgreSQL, Redis), read from /proc before and after each run.

    python bench/debits.py            # under a minute on 2 idle cores, ~3 loaded
    python bench/debits.py --quick    # half the work

Fleet: 2 worker processes, prefork, 2 children each (BENCH_WORKERS, BENCH_CONCURRENCY); its
own PostgreSQL database (bw_bench_debits) and Redis database (10), made afresh each run.
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
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DB_NAME = "bw_bench_debits"
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))
ACCOUNTS = 1000
HOT = "acc_hot"
FUNDS = 1_000_000_000  # no run ever refuses for lack of money


def setup_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}"
    env["BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/10")
    env["RESULT_BACKEND"] = env["BROKER_URL"]
    os.environ.update(env)
    return env


def dsn() -> str:
    return os.environ["DATABASE_URL"].replace("+psycopg", "")


def build() -> list[str]:
    """1,000 funded accounts plus the hot one; each funded by one balanced adjustment."""
    import psycopg
    import redis

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    redis.Redis.from_url(os.environ["BROKER_URL"]).flushdb()
    from worker.db.migrate import upgrade

    upgrade()
    at = datetime.now(UTC)
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO accounts (id, name, currency, country, status, emails, locale,
                display_currency, balance, auto_reload_enabled, alerts_enabled,
                auto_reload_declines, created_at, updated_at)
            SELECT id, 'bench', 'EUR', 'GB', 'active', '[]'::jsonb, 'en', 'EUR', %(funds)s,
                false, false, 0, %(at)s, %(at)s
            FROM (SELECT 'acc_b' || lpad(g::text, 6, '0') AS id FROM generate_series(1, %(n)s) g
                  UNION ALL SELECT %(hot)s) ids""",
            {"n": ACCOUNTS, "hot": HOT, "funds": FUNDS, "at": at},
        )
        conn.execute(
            "INSERT INTO ledger_accounts (code, currency, account_id, created_at)"
            " SELECT 'customer:' || id, 'EUR', id, %(at)s FROM accounts"
            " UNION ALL SELECT 'adjustments:EUR', 'EUR', NULL, %(at)s"
            " UNION ALL SELECT 'usage_revenue:EUR', 'EUR', NULL, %(at)s",
            {"at": at},
        )
        conn.execute(
            "INSERT INTO ledger_transactions (id, account_id, kind, reference, amount, currency,"
            " balance_after, description, created_at)"
            " SELECT 'txn_fund_' || id, id, 'adjustment', 'funds', balance, 'EUR', balance,"
            " 'bench funds', %(at)s FROM accounts",
            {"at": at},
        )
        conn.execute(
            "INSERT INTO postings (transaction_id, ledger_account_id, amount)"
            " SELECT 'txn_fund_' || a.id, la.id, a.balance FROM accounts a"
            " JOIN ledger_accounts la ON la.account_id = a.id"
            " UNION ALL SELECT 'txn_fund_' || a.id,"
            " (SELECT id FROM ledger_accounts WHERE code = 'adjustments:EUR'), -a.balance"
            " FROM accounts a"
        )
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute("SELECT id FROM accounts WHERE id <> %s ORDER BY id", (HOT,))
        return [row[0] for row in rows]


class Fleet:
    def __init__(self, env: dict[str, str]) -> None:
        from worker.celery import app

        # Workers left by an interrupted run would consume this run's messages too (and
        # with old code): refuse, naming them, rather than measure a bigger fleet.
        stale = [name for reply in app.control.ping(timeout=1.0) or [] for name in reply]
        if stale:
            raise SystemExit(f"workers already consume {env['BROKER_URL']}: {stale}; stop them")
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(WORKERS):
            log = open(f"/tmp/bench_debits_worker{i}.log", "ab")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "worker", "worker",
                     "--loglevel=WARNING", "--pool=prefork", f"--concurrency={CONCURRENCY}",
                     f"--hostname=benchdebits{i}@%h", "--without-gossip", "--without-mingle"],
                    env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        atexit.register(self.stop)
        from worker.celery import app

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if len(app.control.ping(timeout=1.0) or []) >= WORKERS:
                return
        raise RuntimeError("bench workers did not start; see /tmp/bench_debits_worker*.log")

    def stop(self) -> None:
        for p in self.procs:  # only the processes this run started, by their group
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def audit() -> str:
    from worker.db.session import unit_of_work
    from worker.ledger import service as ledger

    with unit_of_work() as uow:
        report = ledger.audit(uow.session)
    return "ok" if report["ok"] else "FAILED"


def timed_group(sigs: list[Any]) -> float:
    from celery import group

    started = time.perf_counter()
    group(sigs).apply_async().get(timeout=900)
    return time.perf_counter() - started


class CpuByProcess:
    """CPU seconds used by each kind of process on the machine during a run (Linux /proc)."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _cmdline(pid: str) -> str:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def snapshot(self) -> dict[str, tuple[str, float]]:
        seen: dict[str, tuple[str, float]] = {}
        if not os.path.isdir("/proc"):
            return seen
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cmd = self._cmdline(pid)
            if "celery" in cmd:
                kind = "worker child" if "celery" in self._cmdline(fields[1]) else "worker parent"
            elif "postgres" in cmd:
                kind = "PostgreSQL"
            elif "redis" in cmd:
                kind = "Redis"
            elif int(pid) == os.getpid():
                kind = "bench (producer)"
            else:
                kind = "other"
            seen[pid] = (kind, (int(fields[11]) + int(fields[12])) / self.HZ)
        return seen

    def during(self, run: Callable[[], float]) -> tuple[float, dict[str, float], float]:
        """`run`'s rate, CPU seconds by kind of process, and the run's wall seconds."""
        before, started = self.snapshot(), time.perf_counter()
        rate = run()
        wall, after = time.perf_counter() - started, self.snapshot()
        used: dict[str, float] = {}
        for pid, (kind, seconds) in after.items():
            used[kind] = used.get(kind, 0.0) + seconds - before.get(pid, (kind, 0.0))[1]
        return rate, used, wall


def cpu_table(measured: list[tuple[str, int, dict[str, float], float]]) -> None:
    """ms of CPU per message by kind of process; `idle` is what the cores did not use."""
    kinds = ["bench (producer)", "worker parent", "worker child", "PostgreSQL", "Redis", "other"]
    cores = os.cpu_count() or 1
    print("\nCPU per message, ms (from /proc; the whole machine)")
    print(f"{'run':<24} | " + " | ".join(f"{k:>16}" for k in kinds) + " |   total |    idle")
    for name, n, used, wall in measured:
        total = sum(used.values())
        cells = " | ".join(f"{used.get(k, 0.0) / n * 1000:>16.2f}" for k in kinds)
        idle = max(0.0, cores * wall - total) / n * 1000
        print(f"{name:<24} | {cells} | {total / n * 1000:>7.2f} | {idle:>7.2f}")


def noop_rate(n: int) -> float:
    from worker.celery import app

    return n / timed_group([app.signature("celery.accumulate", args=[i]) for i in range(n)])


def single_rate(n: int, pick: Callable[[int], str], tag: str) -> float:
    from worker.celery import app

    sigs = [
        app.signature("balance.usage.debit", args=[pick(i), "0.0057", f"{tag}-{i}"])
        for i in range(n)
    ]
    return n / timed_group(sigs)


def many_rate(batches: int, pick: Callable[[int], str], tag: str, size: int = 500) -> float:
    from worker.celery import app

    sigs = [
        app.signature(
            "balance.usage.debit_many",
            kwargs={
                "debits": [
                    {"account_id": pick(b * size + i), "amount": "0.0057",
                     "reference": f"{tag}-{b}-{i}"}
                    for i in range(size)
                ]
            },
        )
        for b in range(batches)
    ]  # fmt: skip
    return batches * size / timed_group(sigs)


def anchor_rate(n: int, pick: Callable[[int], str], tag: str, connections: int = 4) -> float:
    """The same durable debit per row in plain psycopg: lock, insert txn + 2 postings,
    update the cached balance, commit; `connections` threads."""
    import psycopg

    conns = [psycopg.connect(dsn()) for _ in range(connections)]
    revenue = (
        conns[0]
        .execute("SELECT id FROM ledger_accounts WHERE code = 'usage_revenue:EUR'")
        .fetchone()[0]
    )  # type: ignore[index]
    ledger_ids = dict(conns[0].execute("SELECT account_id, id FROM ledger_accounts").fetchall())
    conns[0].commit()
    at = datetime.now(UTC)

    def work(k: int) -> None:
        conn = conns[k]
        for i in range(k, n, connections):
            account_id = pick(i)
            txn_id = f"txn_anchor_{tag}_{i}"
            with conn.transaction():
                (balance,) = conn.execute(
                    "SELECT balance FROM accounts WHERE id = %s FOR UPDATE", (account_id,)
                ).fetchone()  # type: ignore[misc]
                conn.execute(
                    "INSERT INTO ledger_transactions (id, account_id, kind, reference, amount,"
                    " currency, balance_after, description, created_at) VALUES"
                    " (%s, %s, 'usage_debit', %s, -0.0057, 'EUR', %s - 0.0057, NULL, %s)",
                    (txn_id, account_id, f"{tag}-{i}", balance, at),
                )
                conn.execute(
                    "INSERT INTO postings (transaction_id, ledger_account_id, amount)"
                    " VALUES (%s, %s, -0.0057), (%s, %s, 0.0057)",
                    (txn_id, ledger_ids[account_id], txn_id, revenue),
                )
                conn.execute(
                    "UPDATE accounts SET balance = balance - 0.0057, updated_at = %s WHERE id = %s",
                    (at, account_id),
                )

    threads = [threading.Thread(target=work, args=(k,)) for k in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return n / elapsed


def batcher_latency(
    rate: int, seconds: float, pick: Callable[[int], str]
) -> tuple[float, float, int, float]:
    """Offer `rate` debits/s for `seconds` through the batcher; submit -> result, seconds."""
    from worker.celery import app
    from worker.client import DebitBatcher

    n = int(rate * seconds)
    latencies: list[float] = []
    lock = threading.Lock()
    futures = []
    # One message in flight per worker process (prefetch 1): more would only queue.
    in_flight = WORKERS * CONCURRENCY
    with DebitBatcher(app, max_batch=500, max_wait_ms=20, max_in_flight=in_flight) as batcher:
        started = time.perf_counter()
        for i in range(n):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent_at = time.perf_counter()
            future = batcher.submit(pick(i), "0.0057", f"lat-{i}")

            def done(_f: Any, sent_at: float = sent_at) -> None:
                with lock:
                    latencies.append(time.perf_counter() - sent_at)

            future.add_done_callback(done)
            futures.append(future)
        offered = n / (time.perf_counter() - started)
    bad = sum(1 for f in futures if f.exception() is not None or f.result()["status"] != "ok")
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, bad, offered


def main() -> int:
    import psycopg

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="half the work")
    parser.add_argument("--latency-only", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency_only:  # the child the main run starts against its fleet
        setup_env()
        ids_ = [f"acc_b{g:06d}" for g in range(1, ACCOUNTS + 1)]
        result = batcher_latency(2000, args.latency_only, lambda i: ids_[i % ACCOUNTS])
        print(*result)
        return 0
    scale = 1 if args.quick else 2
    env = setup_env()
    begun = time.perf_counter()
    ids = build()
    spread = ids.__getitem__

    def spread_pick(i: int) -> str:
        return spread(i % len(ids))

    def hot(_i: int) -> str:
        return HOT

    fleet = Fleet(env)
    rows: list[tuple[str, float, str]] = []
    try:
        noop_rate(100)  # warm: children imported, connections open
        cpu = CpuByProcess()
        ceiling, used, wall = cpu.during(lambda: noop_rate(500 * scale))
        spent = [("no-op Celery task", 500 * scale, used, wall)]
        rows.append(("no-op Celery task (ceiling)", ceiling, "-"))
        single_rate(100, spread_pick, "warm")
        rate, used, wall = cpu.during(lambda: single_rate(500 * scale, spread_pick, "s"))
        spent.append(("debit, 1,000 accounts", 500 * scale, used, wall))
        rows.append(("debit, 1,000 accounts", rate, audit()))
        rows.append(("debit, one hot account", single_rate(500 * scale, hot, "h"), audit()))
        rows.append(
            ("debit_many x500, 1,000 accounts", many_rate(6 * scale, spread_pick, "m"), audit())
        )
        rows.append(("debit_many x500, one hot account", many_rate(6 * scale, hot, "mh"), audit()))
        anchor_spread = anchor_rate(1500 * scale, spread_pick, "a")
        rows.append(("anchor: psycopg per row, 1,000 accounts", anchor_spread, audit()))
        anchor_hot = anchor_rate(1500 * scale, hot, "ah")
        rows.append(("anchor: psycopg per row, one hot account", anchor_hot, audit()))
        # In a process of its own: a client whose result consumer was used by the batcher's
        # threads waited up to a second per result in the group runs after it (and the
        # other way round), which is the bench's client, not the fleet (README, Benchmarks).
        # The bulk runs above wrote ~30,000 transactions to tables analysed when they held
        # 1,000 rows; before autovacuum catches up, the plans of the batch's look-ups are
        # those of a tiny table and each message was several times slower (p50 4 s instead
        # of 0.1 s here). Analysed first, as a table in service is (README, Benchmarks).
        with psycopg.connect(dsn(), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        child = subprocess.run(
            [sys.executable, __file__, "--latency-only", str(2 * scale)],
            env=env, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        p50, p99, bad, offered = (float(x) for x in child.stdout.split()[-4:])
        lat_audit = audit()
    finally:
        fleet.stop()

    print(
        f"\nusage debit benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, fleet {WORKERS} workers x {CONCURRENCY} prefork, "
        f"{'--quick' if args.quick else 'full'} run"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'run':<{width}} | {'debits/s':>9} | {'x ceiling':>9} | {'x anchor':>8} | audit")
    print("-" * (width + 48))
    for name, rate, verdict in rows:
        anchor = anchor_hot if "hot" in name else anchor_spread
        print(
            f"{name:<{width}} | {rate:>9,.0f} | {rate / ceiling:>9.2f} | "
            f"{rate / anchor:>8.2f} | {verdict}"
        )
    print(
        f"batcher at {offered:,.0f} debits/s offered (max_batch 500, max_wait 20 ms, "
        f"max_in_flight {WORKERS * CONCURRENCY}): "
        f"submit -> result p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"{bad:.0f} not ok, audit {lat_audit} (measured last, in its own process)"
    )
    cpu_table(spent)
    print(f"(run took {time.perf_counter() - begun:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
