"""Soak / load run against the local stand-in: many threads, mixed pools, short credentials, random AWS faults.

    python benchmarks/soak.py --minutes 10 --threads 64 --lifetime 5

Four engines share the load (QueuePool of 1, 4 and 16 connections recycled every ``--recycle`` seconds, and a
NullPool), on three credential keys (profile a on the workgroup, profile a on the cluster as ``alice``,
profile b on the workgroup). The emulator issues credentials of ``--lifetime`` seconds and, at random, throttles,
answers 500 or adds latency -- never more than ``max_attempts - 1`` failures in a row, so every fetch
eventually succeeds and every connect must too. Prints a summary and exits non-zero if any connect failed, the
number of credential fetches per key strayed from the ideal (one per refresh window), or threads or memory
grew. ``tests/test_load.py`` runs the same :func:`run_load` for a few seconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

#: Fraction of a credential's lifetime after which the cache refreshes it (RefreshPolicy.refresh_fraction).
REFRESH_FRACTION = 0.75
_FETCHES = ("GetCredentials", "GetClusterCredentials")
# "*" hits whatever comes next (refreshes, endpoint lookups after a recycle); the others target fetches.
_FAULT_OPS = ("*", "*", "GetCredentials", "GetClusterCredentials")


@dataclass
class LoadReport:
    seconds: float
    threads: int
    lifetime: float
    connects: int = 0
    failures: list[str] = field(default_factory=list)
    fetches: dict[str, int] = field(default_factory=dict)  # successful credential fetches per key
    ideal_fetches: float = 0.0  # per key: one per refresh window, plus the first
    faults_injected: int = 0
    rss_after_warmup: int = 0
    rss_end: int = 0
    threads_before: int = 0
    threads_after: int = 0
    leftover_threads: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> int:
        return self.rss_end - self.rss_after_warmup

    def problems(self, *, fetch_tolerance: float = 1.35, rss_limit: int = 64 << 20) -> list[str]:
        """What makes this run a failure (empty if none)."""
        found = []
        if self.failures:
            found.append(f"{len(self.failures)} failed connects, e.g. {self.failures[0]}")
        for key, n in self.fetches.items():
            if n > self.ideal_fetches * fetch_tolerance + 1:
                found.append(f"{key}: {n} fetches, ideal {self.ideal_fetches:.1f}")
            if n < self.seconds / (
                self.lifetime + 2
            ):  # fewer than one per lifetime: connects would have failed
                found.append(f"{key}: only {n} fetches in {self.seconds:.0f} s")
        if self.rss_growth > rss_limit:
            found.append(f"RSS grew by {self.rss_growth >> 20} MiB")
        if self.leftover_threads:
            found.append(f"threads left over: {self.leftover_threads}")
        return found


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_load(
    rs: RedshiftStandIn,
    *,
    seconds: float,
    threads: int = 64,
    lifetime: float = 5.0,
    recycle: float = 1.5,
    faults: bool = True,
    seed: int | None = None,
) -> LoadReport:
    """Hammer checkouts from ``threads`` threads for ``seconds``; the AWS environment must point at ``rs``."""
    rng = random.Random(seed)  # fault choice, not crypto
    report = LoadReport(seconds=seconds, threads=threads, lifetime=lifetime)
    report.threads_before = threading.active_count()
    before = set(threading.enumerate())
    emulator = rs.emulator
    emulator.max_lifetime = lifetime
    emulator.reset_calls()
    pooled: dict[str, Any] = {"pool_recycle": recycle, "max_overflow": 0, "pool_timeout": 60}
    engines = [
        (sa.create_engine(rs.url(), pool_size=1, **pooled), "IAM:alice-dev"),
        (sa.create_engine(rs.url("psycopg2"), pool_size=4, **pooled), "IAM:alice-dev"),
        (
            sa.create_engine(rs.url("psycopg2", cluster=rs.cluster, user=rs.db_user), pool_size=16, **pooled),
            rs.db_user,
        ),
        (sa.create_engine(rs.url(aws_profile="rs-iam-b"), poolclass=NullPool), "IAM:bob-ops"),
    ]
    stop = threading.Event()
    lock = threading.Lock()
    counts = Counter[str]()

    def worker(index: int) -> None:
        engine, expected = engines[index % len(engines)]
        while not stop.is_set():
            try:
                with engine.connect() as conn:
                    got = conn.execute(sa.text("select current_user")).scalar()
                if got != expected:
                    raise AssertionError(f"logged in as {got!r}, expected {expected!r}")
                with lock:
                    counts["ok"] += 1
            except Exception as exc:
                with lock:
                    report.failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    def inject() -> None:
        # Bursts of at most two failures, the next burst only 3.5 s after the last one was consumed: botocore's
        # third attempt comes at most 1 + 2 s after its first failed, so no fetch sees more than two failures in
        # a row (of its 5 attempts) and every fetch succeeds.
        quiet_until = 0.0
        while True:
            now = time.monotonic()
            consumed = sum(1 for c in emulator.calls if c.error_code is not None)
            if consumed < report.faults_injected:
                quiet_until = now + 3.5
            elif now >= quiet_until:
                for _ in range(rng.choice((1, 2))):
                    op = rng.choice(_FAULT_OPS)
                    (emulator.faults.throttle if rng.random() < 0.5 else emulator.faults.server_error)(op, 1)
                    report.faults_injected += 1
            emulator.faults.latency("*", rng.uniform(0.0, 0.03))
            if stop.wait(0.05):
                return

    workers = [threading.Thread(target=worker, args=(i,), name=f"soak-{i}") for i in range(threads)]
    injector = threading.Thread(target=inject, name="soak-faults")
    started = time.monotonic()
    try:
        if faults:
            injector.start()  # its first burst meets the cold start
            time.sleep(0.05)
        for t in workers:
            t.start()
        time.sleep(min(2.0, seconds / 4))
        gc.collect()
        report.rss_after_warmup = rss_bytes()
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        stop.set()
        for t in workers:
            t.join(60)
        if injector.is_alive():
            injector.join(10)
        elapsed = time.monotonic() - started
        emulator.faults.clear()
        for engine, _ in engines:
            engine.dispose()
    gc.collect()
    report.rss_end = rss_bytes()
    report.seconds = elapsed
    report.connects = counts["ok"]
    ok = [c for c in emulator.calls if c.operation in _FETCHES and c.status == 200]
    report.fetches = dict(Counter(f"{c.operation} as {c.caller}" for c in ok))
    report.ideal_fetches = elapsed / (REFRESH_FRACTION * lifetime) + 1
    # Background refreshes end by themselves; the library must leave no thread behind.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and not _server_side(t)]
        if not extra:
            break
        time.sleep(0.05)
    report.leftover_threads = [t.name for t in extra]
    report.threads_after = threading.active_count()
    emulator.max_lifetime = None
    return report


def _server_side(thread: threading.Thread) -> bool:
    # The emulator's per-connection handler threads serve botocore's keep-alive connections; they belong to the
    # stand-in (the AWS side), not to the library.
    return "process_request_thread" in thread.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--lifetime", type=float, default=5.0, help="credential lifetime in seconds")
    parser.add_argument("--recycle", type=float, default=1.5, help="pool_recycle of the pooled engines")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes must be in (0, 1440]")
    with RedshiftStandIn() as rs:
        os.environ.update(rs.aws_env())
        sqlalchemy_rs_iam.reset()
        report = run_load(
            rs, seconds=args.minutes * 60, threads=args.threads, lifetime=args.lifetime,
            recycle=args.recycle, faults=not args.no_faults, seed=args.seed,
        )  # fmt: skip
    problems = report.problems()
    if args.json:
        print(json.dumps({**asdict(report), "problems": problems}, indent=2))
    else:
        print(f"ran {report.seconds:.0f} s, {report.threads} threads, credentials of {report.lifetime:g} s")
        print(f"connects: {report.connects} ok, {len(report.failures)} failed")
        print(f"faults injected: {report.faults_injected}")
        print(f"credential fetches per key (ideal {report.ideal_fetches:.1f}):")
        for key, n in sorted(report.fetches.items()):
            print(f"  {key}: {n}")
        print(f"RSS after warm-up {report.rss_after_warmup >> 20} MiB, at end {report.rss_end >> 20} MiB")
        print(f"threads: {report.threads_before} before, {report.threads_after} after")
        print("OK" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
