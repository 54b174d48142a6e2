"""The demo: everything the plugin does, against the local Redshift stand-in, in about 20 seconds.

    bash scripts/demo          # installs what is missing, then runs this file

It starts a real PostgreSQL behind a Redshift wire front and an AWS API emulator (real HTTP, botocore signing),
then shows: a password-free engine URL; pandas over it; 16 threads connecting at once with one AWS call;
credentials that expire every 4 seconds while connects keep succeeding; a revoked password recovered.
"""

from __future__ import annotations

import os
import threading
import time

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn


def step(title: str) -> None:
    print(f"\n== {title}")


def main() -> int:
    with RedshiftStandIn() as rs:
        os.environ.update(rs.aws_env())
        url = rs.url()
        step("1. One URL, no password")
        print(url)

        step("2. pandas.read_sql_query over it")
        engine = sa.create_engine(url)
        df = pd.read_sql_query(sa.text("select current_user as db_user, count(*) as rows from sales"), engine)
        print(df.to_string(index=False))

        step("3. 16 threads open connections at once on a cold cache")
        sqlalchemy_rs_iam.reset()
        rs.emulator.reset_calls()
        rs.emulator.faults.latency("GetCredentials", 0.3)
        burst = sa.create_engine(url, pool_size=16, max_overflow=0)
        barrier = threading.Barrier(16)

        def checkout() -> None:
            barrier.wait()
            with burst.connect() as conn:
                conn.execute(sa.text("select 1"))

        threads = [threading.Thread(target=checkout) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rs.emulator.faults.clear()
        print(f"16 connections, GetCredentials calls: {len(rs.emulator.calls_for('GetCredentials'))}")

        step("4. Credentials that expire every 4 s; a new login every 50 ms for 12 s")
        sqlalchemy_rs_iam.reset()
        rs.emulator.reset_calls()
        rs.emulator.max_lifetime = 4.0
        rolling = sa.create_engine(url, poolclass=NullPool)
        ok = failed = 0
        end = time.monotonic() + 12
        while time.monotonic() < end:
            try:
                with rolling.connect() as conn:
                    conn.execute(sa.text("select 1"))
                ok += 1
            except sa.exc.DBAPIError:
                failed += 1
            time.sleep(0.05)
        calls = len(rs.emulator.calls_for("GetCredentials"))
        print(
            f"logins ok={ok} failed={failed}; GetCredentials calls={calls} (refreshed ahead of each expiry)"
        )
        rs.emulator.max_lifetime = None

        step("5. The password is revoked on the server; the next connect recovers by itself")
        rs.emulator.revoke()
        with rolling.connect() as conn:
            print("current_user:", conn.execute(sa.text("select current_user")).scalar())
        print("counters:", dict(sqlalchemy_rs_iam.stats(rolling)))
        return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
