"""`balancectl accounts show` wall time on the embedded default (issue 18; not a test).

Creates an account in a temporary BALANCE_HOME (embedded SQLite, no servers), then runs,
interleaved so both see the same machine load, N times each:
- `python -c pass` (the interpreter's own start-up: the floor),
- `balancectl accounts show ID --json`,
and prints min and median wall seconds of each, the CPU seconds (user + sys) of one run of
each, and the target (<= 0.3 s wall). The minimum is the figure that says what the command
costs; the median says what the machine's load added.

    python bench/cli_startup.py            # 20 runs each
    python bench/cli_startup.py --runs 50
    python bench/cli_startup.py --balancectl /other/tree/.venv/bin/balancectl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.3


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _cpu(cmd: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--balancectl",
        default=str(Path(sys.executable).with_name("balancectl")),
        help="another install's balancectl (e.g. main's) to compare on the same machine",
    )
    args = parser.parse_args()
    balancectl = args.balancectl
    with tempfile.TemporaryDirectory() as home:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"}
        }
        env["BALANCE_HOME"] = home
        created = subprocess.run(
            [balancectl, "accounts", "create", "--name", "Bench", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        account_id = json.loads(created.stdout)["id"]
        show = [balancectl, "accounts", "show", account_id, "--json"]
        floor = [sys.executable, "-c", "pass"]
        _timed(show, env)  # bytecode caches warm
        times: dict[str, list[float]] = {"python -c pass": [], "accounts show": []}
        for _ in range(args.runs):
            times["python -c pass"].append(_timed(floor, env))
            times["accounts show"].append(_timed(show, env))
        cpu = {"python -c pass": _cpu(floor, env), "accounts show": _cpu(show, env)}
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; python {platform.python_version()}; "
        f"{args.runs} runs each, interleaved"
    )
    print(f"{'command':<16} {'min s':>7} {'median s':>9} {'cpu s':>7}")
    for name, values in times.items():
        print(f"{name:<16} {min(values):>7.3f} {statistics.median(values):>9.3f} {cpu[name]:>7.3f}")
    best = min(times["accounts show"])
    print(f"target <= {TARGET} s wall: {'met' if best <= TARGET else 'NOT met'} (min {best:.3f} s)")


if __name__ == "__main__":
    main()
